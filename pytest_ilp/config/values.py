"""The values of settings: from text or YAML into checked Python values, each error naming where
the value was written (a flag, `<ilp.yaml>: key`, `key in <ini file>`).

Nothing here reads a file or knows pytest: `resolve` finds the raw values, `settings` declares
which conversion each setting takes. What only some values need is imported when they are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_ilp.core.criteria import EXAMPLES, Criterion, parse_criterion
from pytest_ilp.core.errors import IlpUsageError
from pytest_ilp.core.rule_limits import RuleLimits
from pytest_ilp.core.samples import MustLearnSelector, Sample

if TYPE_CHECKING:
    from pytest_ilp.core.shards import Shard


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


# -- scalars -----------------------------------------------------------------------------------

_KIND_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text"}


def convert(kind: str, raw: Any, where: str, choices: tuple[str, ...] = ()) -> Any:
    """`raw` (text from the command line or the ini file, or a YAML value) as a `kind` value."""
    if kind == "criterion":
        try:
            return parse_criterion(raw)
        except ValueError as exc:
            raise IlpUsageError(f"{where}: {exc}") from None
    try:
        if kind == "bool":
            value: Any = _boolean(raw)
        elif kind == "int":
            if isinstance(raw, (bool, float)):
                raise ValueError
            value = int(raw)
        elif kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        else:
            value = str(raw)
    except (TypeError, ValueError):
        raise IlpUsageError(f"{where}: expected {_KIND_NAMES[kind]}, got {raw!r}") from None
    if choices and value not in choices:
        raise IlpUsageError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


# -- checks a converted value must pass, wherever it came from (named by its flag) --------------


def device(value: str, flag: str) -> str:
    if value in ("auto", "cpu", "cuda", "mps") or (
        value.startswith("cuda:") and value[5:].isdigit()
    ):
        return value
    raise IlpUsageError(f"{flag}: {value!r} is not one of auto, cpu, cuda, cuda:N, mps")


def positive(value: int, flag: str) -> int:
    if value <= 0:
        raise IlpUsageError(f"{flag}: must be a positive integer, got {value}")
    return value


def non_negative(value: float, flag: str) -> float:
    if value < 0:
        raise IlpUsageError(f"{flag}: must not be negative, got {value}")
    return value


def shard(text: str, flag: str) -> Shard:
    from pytest_ilp.core.shards import Shard

    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise IlpUsageError(f"{flag}: {exc}") from None


# -- paths -------------------------------------------------------------------------------------


def yaml_paths(raw: Any, where: str, base: Path) -> list[Path]:
    items = [raw] if isinstance(raw, (str, Path)) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, Path)) for i in items):
        raise IlpUsageError(f"{where}: expected a path or a list of paths")
    return [base / i for i in items]


def yaml_path(raw: Any, where: str, base: Path) -> Path:
    if not isinstance(raw, (str, Path)):
        raise IlpUsageError(f"{where}: expected a path")
    return base / raw


def comma_separated_stages(raw: list[str], base: Path) -> list[Stage]:
    """History checkpoints as written on the command line or in the ini file: each value may
    hold several, separated by commas, relative to `base`."""
    return [Stage(None, base / p) for value in raw for p in value.split(",") if p]


def yaml_history(raw: Any, where: str, base: Path) -> list[Stage]:
    """A list of checkpoints, or a mapping from the data's `stage` values to checkpoints."""
    if isinstance(raw, (str, Path)):
        raw = [raw]
    if isinstance(raw, (list, tuple)) and all(isinstance(i, (str, Path)) for i in raw):
        return [Stage(None, base / i) for i in raw]
    if isinstance(raw, Mapping) and all(isinstance(v, (str, Path)) for v in raw.values()):
        return [Stage(str(name), base / path) for name, path in raw.items()]
    raise IlpUsageError(
        f"{where}: expected a list of checkpoint folders, oldest first, or a mapping from the "
        "data's stage names to the checkpoint that ended each stage"
    )


# -- structured ilp.yaml values ----------------------------------------------------------------


def render_flags(raw: Any, where: str) -> dict[str, bool]:
    """ilp.yaml's `render: {mode, append_eos, add_special_tokens}` beside its mode."""
    if not isinstance(raw, Mapping):
        return {}
    reject_unknown(raw, {"mode", "append_eos", "add_special_tokens"}, where)
    flags = {}
    for key in ("append_eos", "add_special_tokens"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise IlpUsageError(f"{where}.{key} must be true or false")
            flags[key] = raw[key]
    return flags


def backend_args(raw: Any, where: str, chosen: str) -> dict[str, Any]:
    """ilp.yaml's `backend.args`, for the backend it names only: `--ilp-backend=hf` over an
    ilp.yaml written for vllm does not hand vLLM's engine arguments to transformers."""
    if not isinstance(raw, Mapping):
        return {}
    reject_unknown(raw, {"name", "args"}, where)
    args = raw.get("args") or {}
    if not isinstance(args, Mapping):
        raise IlpUsageError(f"{where}.args must be a mapping")
    named = raw.get("name")
    if named is not None and named != chosen:
        return {}
    return dict(args)


def must_learn(raw: Any, where: str, base: Path) -> MustLearnSelector:
    if not isinstance(raw, Mapping):
        raise IlpUsageError(f"{where}: expected a mapping like {{tags: [safety], ids: [...]}}")
    reject_unknown(raw, {"tags", "ids"}, where)
    selected = {}
    for key in ("tags", "ids"):
        values = raw.get(key) or []
        if not isinstance(values, list):
            raise IlpUsageError(f"{where}.{key}: expected a list")
        selected[key] = frozenset(str(v) for v in values)
    return MustLearnSelector(tags=selected["tags"], ids=selected["ids"])


def rule_limits(raw: Any, where: str, base: Path) -> RuleLimits:
    if not isinstance(raw, Mapping):
        raise IlpUsageError(f"{where}: expected a mapping of thresholds")
    defaults = RuleLimits()
    reject_unknown(raw, {f.name for f in fields(RuleLimits)}, where)
    values = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise IlpUsageError(
                f"{where}.{key}: expected a non-negative number (default "
                f"{getattr(defaults, key)}), got {value!r}"
            )
        values[key] = type(getattr(defaults, key))(value)
    return replace(defaults, **values)


def criterion_rules(raw: Any, where: str, base: Path) -> tuple[CriterionRule, ...]:
    """ilp.yaml's `criteria:` list, e.g. `- {files: [long.jsonl], criterion: {nll: 1.0}}`;
    its files are relative to `base`, the folder of ilp.yaml."""
    if not isinstance(raw, list):
        raise IlpUsageError(
            f"{where}: expected a list of rules like {{files: [data/long.jsonl], criterion: "
            "{token_accuracy: 0.9}} or {tags: [mc], criterion: choice}"
        )
    rules = []
    for number, entry in enumerate(raw, start=1):
        at = f"{where}[{number}]"
        if not isinstance(entry, Mapping) or "criterion" not in entry:
            raise IlpUsageError(f"{at}: expected a mapping with a `criterion` and files/tags")
        reject_unknown(entry, {"files", "tags", "criterion"}, at)
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
                files=tuple((base / f).resolve() for f in lists["files"]),
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


def reject_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise IlpUsageError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
