"""Settings from where users write them, resolved once into a frozen `Settings`.

A setting can come from the command line, from `ilp.yaml`, or from the pytest ini file
(`[pytest]` / `[tool.pytest.ini_options]`); the first of these that sets it wins:

    command line  >  ilp.yaml  >  ini file  >  default

`pytest_ilp.check` reads the same way: its keyword arguments > its `config` (an ilp.yaml path or
a mapping of the same keys) > defaults.

Relative paths are resolved against where they were written: the invocation folder for the
command line (the current folder for `check`'s arguments), the folder of ilp.yaml, the folder
of the ini file.

The gate's budgets are merged name by name instead (`--ilp-threshold knowledge_conflict=0.05`
changes that one budget and keeps the others from ilp.yaml), and an `ilp_threshold` marker wins
over all three for the samples of what it decorates (`thresholds.merged`).

Without a checkpoint from any of them the plugin stays out of the way (`resolve` returns None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from pytest_ilp.config import values
from pytest_ilp.config.settings import (
    BY_KEY,
    DEFAULT_CONFIG_NAME,
    OPTIONS,
    YAML_KEYS,
    Option,
    Settings,
)
from pytest_ilp.core.errors import IlpUsageError
from pytest_ilp.core.thresholds import threshold_mapping, threshold_pairs

if TYPE_CHECKING:
    import pytest


class Source(Protocol):
    """One place settings are written: each option's value there, converted, or None."""

    def get(self, option: Option) -> Any: ...


def resolve(config: pytest.Config) -> Settings | None:
    """Merge command line, ilp.yaml and ini into `Settings`; None when no checkpoint is set."""
    file = _pytest_config_file(config)
    if not _checkpoint_given(config, file.values):
        return None  # the plugin stays out of the way: nothing else is read or checked
    command_line = CommandLine(config.option, config.invocation_params.dir)
    settings = _baseline_given(settings_from([command_line, file, Ini(config)], file))
    # --runxfail turns every xfail into a plain run: the tolerated samples fail, so the gate
    # must count them as failing too for its verdict to match the exit status.
    if getattr(config.option, "runxfail", False):
        settings = replace(settings, strict=True)
    return settings


def command_line_settings(option: Any, folder: Path) -> Settings:
    """The settings of `python -m pytest_ilp check`: its `--ilp-*` flags (`option`, parsed
    by argparse) > ilp.yaml (`--ilp-config`, else `ilp.yaml` in `folder` if present) >
    defaults. A checkpoint must be named."""
    if option.ilp_config:
        path = folder / option.ilp_config
        if not path.is_file():
            raise IlpUsageError(f"--ilp-config: {path} does not exist")
        file = ConfigFile.read(path)
    elif (folder / DEFAULT_CONFIG_NAME).is_file():
        file = ConfigFile.read(folder / DEFAULT_CONFIG_NAME)
    else:
        file = ConfigFile(None, {}, "None", folder)
    if not option.ilp_checkpoint and file.values.get("checkpoint") is None:
        raise IlpUsageError(
            f"no checkpoint: pass --ilp-checkpoint=DIR or set `checkpoint` in {DEFAULT_CONFIG_NAME}"
        )
    return _baseline_given(settings_from([CommandLine(option, folder), file], file))


def _baseline_given(settings: Settings) -> Settings:
    if settings.update_baseline and settings.baseline is None:
        raise IlpUsageError(
            "--ilp-update-baseline needs --ilp-baseline=PATH: the file to write the report to"
        )
    return settings


def settings_from(sources: Sequence[Source], file: ConfigFile | None) -> Settings:
    """Each setting from the first of `sources` that sets it (budgets: merged name by name,
    the first source winning), else its default; `file` is the ilp.yaml among them, which
    alone holds the structured values."""
    if file is not None:
        file.reject_unknown()
    found: dict[str, Any] = {}
    for option in OPTIONS:
        if option.kind == "budgets":
            merged: dict[str, Any] = {}
            for source in reversed(sources):
                merged.update(source.get(option) or {})
            found[option.field] = merged
            continue
        value = next((v for s in sources if (v := s.get(option)) is not None), None)
        if value is None:
            continue  # the field's default
        if isinstance(value, list):
            value = tuple(value)
        if option.check is not None:
            value = option.check(value, option.flag)
        found[option.field] = value
    raw = file.values if file is not None else {}
    where = file.where if file is not None else ""
    found.update(values.render_flags(raw.get("render"), f"{where}: render"))
    found["backend_args"] = values.backend_args(
        raw.get("backend"), f"{where}: backend", found.get("backend", BY_KEY["backend"].default)
    )
    found["config_file"] = file.path if file is not None else None
    return Settings(**found)


# -- sources -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigFile:
    """ilp.yaml's settings (or a mapping of the same keys given to `check`)."""

    path: Path | None
    values: Mapping[str, Any]
    #: how errors name it: the file's path, or "config".
    where: str
    #: the folder its relative paths start from.
    base: Path

    @classmethod
    def read(cls, path: Path) -> ConfigFile:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise IlpUsageError(f"{path}: not valid YAML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise IlpUsageError(f"{path}: cannot read it ({exc})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise IlpUsageError(f"{path}: expected a mapping of settings at the top level")
        return cls(path, loaded, str(path), path.parent)

    def reject_unknown(self) -> None:
        unknown = sorted(map(str, set(self.values) - set(YAML_KEYS)))
        if unknown:
            raise IlpUsageError(
                f"{self.where}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(YAML_KEYS)}"
            )

    def get(self, option: Option) -> Any:
        if option.yaml not in self.values:
            return None
        raw = self.values[option.yaml]
        where = f"{self.where}: {option.yaml}"
        if option.yaml_mapping and isinstance(raw, Mapping):
            raw = raw.get(option.yaml_mapping)
            if raw is None:
                return None
        if option.kind == "yaml":
            assert option.parse is not None
            return None if raw is None else option.parse(raw, where, self.base)
        if option.kind == "paths":
            return values.yaml_paths(raw, where, self.base)
        if option.kind == "history":
            return values.yaml_history(raw, where, self.base)
        if option.kind == "path":
            return values.yaml_path(raw, where, self.base)
        if option.kind == "budgets":
            if not isinstance(raw, Mapping):
                raise IlpUsageError(
                    f"{where}: expected a mapping of cause to budget, like "
                    "{knowledge_conflict: 0.02, data_inconsistency: 0, total: 0.1}"
                )
            return threshold_mapping(raw, where)
        return values.convert(option.kind, raw, where, option.choices)


@dataclass(frozen=True)
class CommandLine:
    """The `--ilp-*` flags, as parsed (`option`: pytest's `config.option`, or the namespace of
    `python -m pytest_ilp check`); relative paths start from `base`, the invocation folder."""

    option: Any
    base: Path

    def get(self, option: Option) -> Any:
        if not option.on_command_line:
            return None
        raw = getattr(self.option, "ilp_" + option.key)
        if raw is None:
            return None
        base = self.base
        if option.kind == "paths":
            return [base / p for p in raw]
        if option.kind == "history":
            return values.comma_separated_stages(raw, base)
        if option.kind == "path":
            return base / raw
        if option.kind == "budgets":
            return threshold_pairs(raw, option.flag) if raw else None
        return values.convert(option.kind, raw, option.flag, option.choices)


@dataclass(frozen=True)
class Ini:
    """pytest's ini file: `ilp_*` keys (pytest resolves `paths` against the file's folder)."""

    config: pytest.Config

    def get(self, option: Option) -> Any:
        if not option.on_command_line:
            return None
        raw = self.config.getini(option.ini)
        if raw is None or raw == [] or raw == "":
            return None
        where = f"{option.ini} in {self.config.inipath}"
        if option.kind == "path":
            return raw[0]
        if option.kind == "paths":
            return list(raw)
        if option.kind == "history":
            inipath = self.config.inipath
            base = inipath.parent if inipath else self.config.rootpath
            return values.comma_separated_stages(raw, base)
        if option.kind == "budgets":
            return threshold_pairs(raw, where)
        return values.convert(option.kind, raw, where, option.choices)


@dataclass(frozen=True)
class Given:
    """Values given in Python (`check`'s keyword arguments), by `Settings` field name."""

    values: Mapping[str, Any]

    def get(self, option: Option) -> Any:
        return self.values.get(option.field)


def _pytest_config_file(config: pytest.Config) -> ConfigFile:
    """The ilp.yaml of a pytest run: --ilp-config, else the ini's ilp_config, else ilp.yaml in
    the rootdir if there is one (else an empty one)."""
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
        return ConfigFile(None, {}, "None", config.rootpath)
    return ConfigFile.read(path)


def _checkpoint_given(config: pytest.Config, yaml_values: Mapping[str, Any]) -> bool:
    """Whether any source names a checkpoint: without one pytest-ilp reads nothing further."""
    return bool(
        config.option.ilp_checkpoint
        or yaml_values.get("checkpoint") is not None
        or config.getini(BY_KEY["checkpoint"].ini)
    )


def config_file(config: str | Path | Mapping[str, Any]) -> ConfigFile:
    """`check`'s `config`: an ilp.yaml path, or a mapping of its keys (paths in it relative to
    the current folder)."""
    if isinstance(config, Mapping):
        return ConfigFile(None, dict(config), "config", Path.cwd())
    path = Path(config).absolute()
    if not path.is_file():
        raise IlpUsageError(f"config: {path} does not exist")
    return ConfigFile.read(path)
