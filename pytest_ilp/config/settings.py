"""Every pytest-ilp setting, declared once, resolved once into a frozen `Settings`.

A setting can come from the command line, from `ilp.yaml`, or from the pytest ini file
(`[pytest]` / `[tool.pytest.ini_options]`); the first of these that sets it wins:

    command line  >  ilp.yaml  >  ini file  >  default

Relative paths are resolved against where they were written: the invocation folder for the
command line, the folder of ilp.yaml, the folder of the ini file.

The gate's budgets are merged name by name instead (`--ilp-threshold knowledge_conflict=0.05`
changes that one budget and keeps the others from ilp.yaml), and an `ilp_threshold` marker wins
over all three for the samples of what it decorates (`thresholds.merged`).

Without a checkpoint from any of them the plugin stays out of the way (`resolve` returns None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pytest_ilp.config.options import (
    BY_KEY,
    DEFAULT_CONFIG_NAME,
    SETTINGS,
    YAML_KEYS,
    Setting,
)
from pytest_ilp.core.backends import BackendOptions
from pytest_ilp.core.criteria import EXACT, EXAMPLES, Criterion, parse_criterion
from pytest_ilp.core.diagnosis import RuleLimits
from pytest_ilp.core.errors import IlpUsageError
from pytest_ilp.core.render import RenderSettings
from pytest_ilp.core.samples import MustLearnSelector, Sample
from pytest_ilp.core.shards import Shard
from pytest_ilp.core.thresholds import Threshold, threshold_mapping, threshold_pairs

if TYPE_CHECKING:
    import pytest


@dataclass(frozen=True)
class CriterionRule:
    """An ilp.yaml `criteria:` entry: the samples of these data files (or folders) and with
    one of these tags are judged by `criterion`. A rule matches when each selector it gives
    matches."""

    criterion: Criterion
    files: tuple[Path, ...] = ()
    tags: frozenset[str] = frozenset()

    def matches(self, sample: Sample) -> bool:
        if self.files:
            source = sample.source.resolve()
            if not any(source == f or f in source.parents for f in self.files):
                return False
        return not self.tags or not self.tags.isdisjoint(sample.tags)


@dataclass(frozen=True)
class Stage:
    """A checkpoint of sequential fine-tuning; `name` is the data's `stage` value it ended."""

    name: str | None
    checkpoint: Path

    @property
    def label(self) -> str:
        return self.name if self.name is not None else self.checkpoint.name


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one run. Paths are absolute."""

    checkpoint: Path
    data: tuple[Path, ...] = ()
    report: Path | None = None
    backend: str = "hf"
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    use_cache: bool = True
    render: RenderSettings = field(default_factory=RenderSettings)
    fragile_margin: float = 0.1
    generate_max_tokens: int = 64
    must_learn: MustLearnSelector = field(default_factory=MustLearnSelector)
    base: Path | None = None
    history: tuple[Stage, ...] = ()
    train_log: Path | None = None
    diagnosis: RuleLimits = field(default_factory=RuleLimits)
    config_file: Path | None = None
    #: the run's thresholds (command line > ilp.yaml > ini, per name); markers add their own.
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)
    strict: bool = False
    baseline: Path | None = None
    update_baseline: bool = False
    markdown: Path | None = None
    html: Path | None = None
    export: Path | None = None
    shard: Shard | None = None
    #: the run's criterion (command line > ilp.yaml > ini); `criterion_rules` and a record's
    #: own field win over it for their samples, an `ilp_criterion` marker over all.
    criterion: Criterion = EXACT
    criterion_rules: tuple[CriterionRule, ...] = ()

    def criterion_for(self, sample: Sample) -> Criterion:
        """A sample's criterion without markers: its record's field, else the first ilp.yaml
        rule that matches it, else the run's."""
        if sample.criterion is not None:
            return sample.criterion
        rule = next((r for r in self.criterion_rules if r.matches(sample)), None)
        return rule.criterion if rule is not None else self.criterion


def resolve(config: pytest.Config) -> Settings | None:
    """Merge command line, ilp.yaml and ini into `Settings`; None when no checkpoint is set."""
    config_file, yaml_values = _load_yaml(config)
    if not _checkpoint_given(config, yaml_values):
        return None  # the plugin stays out of the way: nothing else is read or checked
    _reject_unknown_settings(config_file, yaml_values)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.kind == "budgets":
            values[setting.key] = _run_budgets(config, setting, yaml_values, config_file)
            continue
        value = _from_cli(config, setting)
        if value is None and setting.yaml in yaml_values:
            value = _from_yaml(setting, yaml_values[setting.yaml], config_file)
        if value is None:
            value = _from_ini(config, setting)
        values[setting.key] = setting.default if value is None else value
    if values["update_baseline"] and values["baseline"] is None:
        raise IlpUsageError(
            "--ilp-update-baseline needs --ilp-baseline=PATH: the file to write the report to"
        )
    return Settings(
        checkpoint=values["checkpoint"],
        data=tuple(values["data"]),
        report=values["report"],
        backend=values["backend"],
        backend_options=BackendOptions(
            device=_check_device(values["device"]),
            dtype=values["dtype"],
            batch_tokens=(
                None
                if values["batch_tokens"] is None
                else _positive(values["batch_tokens"], "batch_tokens")
            ),
            trust_remote_code=values["trust_remote_code"],
            adapter_base=values["adapter_base"],
            args=_backend_args(yaml_values.get("backend"), config_file, values["backend"]),
        ),
        use_cache=values["cache"],
        render=_render_settings(values["render"], yaml_values.get("render"), config_file),
        fragile_margin=_non_negative(values["fragile_margin"], "fragile_margin"),
        generate_max_tokens=_positive(values["generate_max_tokens"], "generate_max_tokens"),
        must_learn=_must_learn(yaml_values.get("must_learn"), config_file),
        base=values["base"],
        history=tuple(values["history"]),
        train_log=values["train_log"],
        diagnosis=_rule_limits(yaml_values.get("diagnosis"), config_file),
        config_file=config_file,
        thresholds=values["threshold"],
        # --runxfail turns every xfail into a plain run: the tolerated samples fail, so the
        # gate must count them as failing too for its verdict to match the exit status.
        strict=values["strict"] or bool(getattr(config.option, "runxfail", False)),
        baseline=values["baseline"],
        update_baseline=values["update_baseline"],
        markdown=values["markdown"],
        html=values["html"],
        export=values["export"],
        shard=_shard(values["shard"]),
        criterion=values["criterion"],
        criterion_rules=_criterion_rules(yaml_values.get("criteria"), config_file),
    )


# -- sources -----------------------------------------------------------------------------------


def _load_yaml(config: pytest.Config) -> tuple[Path | None, dict[str, Any]]:
    path: Path | None = None
    if config.option.ilp_config:
        path = config.invocation_params.dir / config.option.ilp_config
        if not path.is_file():
            raise IlpUsageError(f"--ilp-config: {path} does not exist")
    elif config.getini("ilp_config"):
        path = config.getini("ilp_config")[0]
        if not path.is_file():
            raise IlpUsageError(f"ilp_config in {config.inipath}: {path} does not exist")
    elif (config.rootpath / DEFAULT_CONFIG_NAME).is_file():
        path = config.rootpath / DEFAULT_CONFIG_NAME
    if path is None:
        return None, {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise IlpUsageError(f"{path}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IlpUsageError(f"{path}: cannot read it ({exc})") from None
    if loaded is None:
        return path, {}
    if not isinstance(loaded, dict):
        raise IlpUsageError(f"{path}: expected a mapping of settings at the top level")
    return path, loaded


def _checkpoint_given(config: pytest.Config, yaml_values: Mapping[str, Any]) -> bool:
    """Whether any source names a checkpoint: without one pytest-ilp reads nothing further."""
    return bool(
        config.option.ilp_checkpoint
        or yaml_values.get("checkpoint") is not None
        or config.getini(BY_KEY["checkpoint"].ini)
    )


def _reject_unknown_settings(config_file: Path | None, yaml_values: Mapping[str, Any]) -> None:
    unknown = sorted(map(str, set(yaml_values) - set(YAML_KEYS)))
    if unknown:
        raise IlpUsageError(
            f"{config_file}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(YAML_KEYS)}"
        )


def _from_cli(config: pytest.Config, setting: Setting) -> Any:
    raw = getattr(config.option, "ilp_" + setting.key)
    if raw is None:
        return None
    base = config.invocation_params.dir
    where = setting.flag
    if setting.kind == "paths":
        return [base / p for p in raw]
    if setting.kind == "history":
        return _comma_separated_stages(raw, base)
    if setting.kind == "path":
        return base / raw
    return _convert(setting, raw, where)


def _from_yaml(setting: Setting, raw: Any, config_file: Path | None) -> Any:
    assert config_file is not None
    base = config_file.parent
    where = f"{config_file}: {setting.key}"
    if setting.key in ("render", "backend") and isinstance(raw, Mapping):
        raw = raw.get("mode" if setting.key == "render" else "name")
        if raw is None:
            return None
    if setting.kind == "paths":
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise IlpUsageError(f"{where}: expected a path or a list of paths")
        return [base / i for i in items]
    if setting.kind == "history":
        return _history_from_yaml(raw, base, where)
    if setting.kind == "path":
        if not isinstance(raw, str):
            raise IlpUsageError(f"{where}: expected a path")
        return base / raw
    return _convert(setting, raw, where)


def _from_ini(config: pytest.Config, setting: Setting) -> Any:
    raw = config.getini(setting.ini)
    if raw is None or raw == [] or raw == "":
        return None
    where = f"{setting.ini} in {config.inipath}"
    if setting.kind == "path":
        return raw[0]
    if setting.kind == "paths":
        return list(raw)
    if setting.kind == "history":
        base = config.inipath.parent if config.inipath else config.rootpath
        return _comma_separated_stages(raw, base)
    return _convert(setting, raw, where)


def _comma_separated_stages(raw: list[str], base: Path) -> list[Stage]:
    """History checkpoints as written on the command line or in the ini file: each value may
    hold several, separated by commas, relative to `base`."""
    return [Stage(None, base / p) for value in raw for p in value.split(",") if p]


def _history_from_yaml(raw: Any, base: Path, where: str) -> list[Stage]:
    """A list of checkpoints, or a mapping from the data's `stage` values to checkpoints."""
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list) and all(isinstance(i, str) for i in raw):
        return [Stage(None, base / i) for i in raw]
    if isinstance(raw, Mapping) and all(isinstance(v, str) for v in raw.values()):
        return [Stage(str(name), base / path) for name, path in raw.items()]
    raise IlpUsageError(
        f"{where}: expected a list of checkpoint folders, oldest first, or a mapping from the "
        "data's stage names to the checkpoint that ended each stage"
    )


def _convert(setting: Setting, raw: Any, where: str) -> Any:
    if setting.kind == "criterion":
        try:
            return parse_criterion(raw)
        except ValueError as exc:
            raise IlpUsageError(f"{where}: {exc}") from None
    try:
        if setting.kind == "bool":
            value: Any = _boolean(raw)
        elif setting.kind == "int":
            if isinstance(raw, (bool, float)):
                raise ValueError
            value = int(raw)
        elif setting.kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        else:
            value = str(raw)
    except (TypeError, ValueError):
        raise IlpUsageError(f"{where}: expected {_KIND_NAMES[setting.kind]}, got {raw!r}") from None
    if setting.choices and value not in setting.choices:
        raise IlpUsageError(f"{where}: {value!r} is not one of {', '.join(setting.choices)}")
    return value


_KIND_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text"}


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


# -- structured and checked values -------------------------------------------------------------


def _check_device(device: str) -> str:
    if device in ("auto", "cpu", "cuda", "mps") or (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        return device
    raise IlpUsageError(f"--ilp-device: {device!r} is not one of auto, cpu, cuda, cuda:N, mps")


def _positive(value: int, key: str) -> int:
    if value <= 0:
        raise IlpUsageError(f"{BY_KEY[key].flag}: must be a positive integer, got {value}")
    return value


def _non_negative(value: float, key: str) -> float:
    if value < 0:
        raise IlpUsageError(f"{BY_KEY[key].flag}: must not be negative, got {value}")
    return value


def _render_settings(mode: str, raw: Any, config_file: Path | None) -> RenderSettings:
    if not isinstance(raw, Mapping):
        return RenderSettings(mode=mode)
    known = {"mode", "append_eos", "add_special_tokens"}
    _reject_unknown(raw, known, f"{config_file}: render")
    flags = {}
    for key in ("append_eos", "add_special_tokens"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise IlpUsageError(f"{config_file}: render.{key} must be true or false")
            flags[key] = raw[key]
    return RenderSettings(mode=mode, **flags)


def _backend_args(raw: Any, config_file: Path | None, chosen: str) -> dict[str, Any]:
    """ilp.yaml's `backend.args`, for the backend it names only: `--ilp-backend=hf` over an
    ilp.yaml written for vllm does not hand vLLM's engine arguments to transformers."""
    if not isinstance(raw, Mapping):
        return {}
    _reject_unknown(raw, {"name", "args"}, f"{config_file}: backend")
    args = raw.get("args") or {}
    if not isinstance(args, Mapping):
        raise IlpUsageError(f"{config_file}: backend.args must be a mapping")
    named = raw.get("name")
    if named is not None and named != chosen:
        return {}
    return dict(args)


def _must_learn(raw: Any, config_file: Path | None) -> MustLearnSelector:
    if raw is None:
        return MustLearnSelector()
    where = f"{config_file}: must_learn"
    if not isinstance(raw, Mapping):
        raise IlpUsageError(f"{where}: expected a mapping like {{tags: [safety], ids: [...]}}")
    _reject_unknown(raw, {"tags", "ids"}, where)
    selected = {}
    for key in ("tags", "ids"):
        values = raw.get(key) or []
        if not isinstance(values, list):
            raise IlpUsageError(f"{where}.{key}: expected a list")
        selected[key] = frozenset(str(v) for v in values)
    return MustLearnSelector(tags=selected["tags"], ids=selected["ids"])


def _rule_limits(raw: Any, config_file: Path | None) -> RuleLimits:
    if raw is None:
        return RuleLimits()
    where = f"{config_file}: diagnosis"
    if not isinstance(raw, Mapping):
        raise IlpUsageError(f"{where}: expected a mapping of thresholds")
    defaults = RuleLimits()
    known = {f.name for f in fields(RuleLimits)}
    _reject_unknown(raw, known, where)
    values = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise IlpUsageError(
                f"{where}.{key}: expected a non-negative number (default "
                f"{getattr(defaults, key)}), got {value!r}"
            )
        values[key] = type(getattr(defaults, key))(value)
    return replace(defaults, **values)


def _criterion_rules(raw: Any, config_file: Path | None) -> tuple[CriterionRule, ...]:
    """ilp.yaml's `criteria:` list, e.g. `- {files: [long.jsonl], criterion: {nll: 1.0}}`."""
    if raw is None:
        return ()
    where = f"{config_file}: criteria"
    if not isinstance(raw, list):
        raise IlpUsageError(
            f"{where}: expected a list of rules like {{files: [data/long.jsonl], criterion: "
            "{token_accuracy: 0.9}} or {tags: [mc], criterion: choice}"
        )
    assert config_file is not None
    rules = []
    for number, entry in enumerate(raw, start=1):
        at = f"{where}[{number}]"
        if not isinstance(entry, Mapping) or "criterion" not in entry:
            raise IlpUsageError(f"{at}: expected a mapping with a `criterion` and files/tags")
        _reject_unknown(entry, {"files", "tags", "criterion"}, at)
        lists = {}
        for key in ("files", "tags"):
            value = entry.get(key) or []
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise IlpUsageError(f"{at}.{key}: expected a list of strings")
            lists[key] = value
        if not lists["files"] and not lists["tags"]:
            raise IlpUsageError(
                f"{at}: select samples with `files` and/or `tags` (the run's own criterion is "
                "the top-level `criterion` key)"
            )
        try:
            criterion = parse_criterion(entry["criterion"])
        except ValueError as exc:
            raise IlpUsageError(f"{at}.criterion: {exc}") from None
        rules.append(
            CriterionRule(
                criterion=criterion,
                files=tuple((config_file.parent / f).resolve() for f in lists["files"]),
                tags=frozenset(lists["tags"]),
            )
        )
    return tuple(rules)


def criterion_of_marker(args: tuple[Any, ...], kwargs: Mapping[str, Any], where: str) -> Criterion:
    """The criterion an `ilp_criterion` marker names; a bad one is a usage error."""
    try:
        if not args:
            if not kwargs:
                raise ValueError(f"name a criterion, e.g. {EXAMPLES}")
            return parse_criterion(None, **kwargs)
        return parse_criterion(args[0], *args[1:], **kwargs)
    except ValueError as exc:
        raise IlpUsageError(f"{where}: {exc}") from None


def _shard(text: str | None) -> Shard | None:
    if text is None:
        return None
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise IlpUsageError(f"--ilp-shard: {exc}") from None


# -- budgets: the one place where their sources are merged -------------------------------------


def _run_budgets(
    config: pytest.Config,
    setting: Setting,
    yaml_values: Mapping[str, Any],
    config_file: Path | None,
) -> dict[str, Threshold]:
    """The run's budgets, merged name by name: command line > ilp.yaml > ini."""
    merged: dict[str, Threshold] = {}
    raw_ini = config.getini(setting.ini)
    if raw_ini:
        merged.update(threshold_pairs(raw_ini, f"{setting.ini} in {config.inipath}"))
    if setting.yaml in yaml_values:
        raw = yaml_values[setting.yaml]
        where = f"{config_file}: {setting.yaml}"
        if not isinstance(raw, Mapping):
            raise IlpUsageError(
                f"{where}: expected a mapping of cause to budget, like "
                "{knowledge_conflict: 0.02, data_inconsistency: 0, total: 0.1}"
            )
        merged.update(threshold_mapping(raw, where))
    raw_cli = getattr(config.option, "ilp_" + setting.key)
    if raw_cli:
        merged.update(threshold_pairs(raw_cli, setting.flag))
    return merged


def _reject_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise IlpUsageError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
