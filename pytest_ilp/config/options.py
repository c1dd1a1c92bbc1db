"""The options pytest registers from the settings `Settings` declares (`add_options`), and
whether any source may name a checkpoint (`may_be_active`).

The entry module registers these on every pytest run of every project that has pytest-ilp
installed, checkpoint or not (`--help` lists them, `-p no:ilp` removes them), so this module
and `settings` import only light core modules. `resolve` reads the values into `Settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_ilp.config.settings import BY_KEY, DEFAULT_CONFIG_NAME, OPTIONS
from pytest_ilp.core.criteria import Criterion

if TYPE_CHECKING:
    import pytest


def add_options(parser: pytest.Parser) -> None:
    """Register every setting's flag and ini key with pytest, and `--ilp-config`."""
    group = parser.getgroup("ilp", "pytest-ilp: test that a checkpoint learned its SFT data")
    add_flags(group.addoption)
    for setting in OPTIONS:
        if setting.on_command_line:
            ini_type = {
                "path": "paths",
                "paths": "paths",
                "history": "args",  # split on commas as well as whitespace, see resolve.Ini
                "bool": "bool",
                "budgets": "args",
            }.get(setting.kind, "string")
            # argparse %-formats a flag's help, pytest leaves an ini key's as written.
            ini_help = setting.help.replace("%%", "%")
            parser.addini(setting.ini, ini_help, type=ini_type, default=None)  # type: ignore[arg-type]
    parser.addini("ilp_config", "path of ilp.yaml", type="paths", default=None)


def add_flags(add: Callable[..., Any]) -> None:
    """Add every setting's `--ilp-*` flag, and `--ilp-config`, through `add`: pytest's
    `addoption` or argparse's `add_argument` (`python -m pytest_ilp check`), which take the
    same arguments."""
    for setting in OPTIONS:
        if not setting.on_command_line:
            continue
        if setting.kind == "bool":
            negative = setting.default is True
            flag = "--ilp-no-" + setting.key.replace("_", "-") if negative else setting.flag
            add(
                flag,
                action="store_const",
                const=not negative,
                default=None,
                dest="ilp_" + setting.key,
                help=("do not " if negative else "") + setting.help,
            )
        else:
            add(
                setting.flag,
                action="append" if setting.kind in ("paths", "history", "budgets") else "store",
                dest="ilp_" + setting.key,
                default=None,
                metavar=setting.metavar or setting.key.upper(),
                choices=setting.choices or None,
                help=setting.help
                + (f" (default: {_shown(setting.default)})" if setting.default else ""),
            )
    add(
        "--ilp-config",
        dest="ilp_config",
        default=None,
        metavar="PATH",
        help=f"ilp.yaml with the settings above and more (default: {DEFAULT_CONFIG_NAME} in "
        "the rootdir, if present)",
    )


def _shown(default: Any) -> str:
    return default.spec if isinstance(default, Criterion) else str(default)


def may_be_active(config: pytest.Config) -> bool:
    """Whether any source may name a checkpoint: the command line, the ini file, or an
    ilp.yaml (given, or in the rootdir). Without one the plugin loads nothing further."""
    return bool(
        config.option.ilp_checkpoint
        or config.getini(BY_KEY["checkpoint"].ini)
        or config.option.ilp_config
        or config.getini("ilp_config")
        or (config.rootpath / DEFAULT_CONFIG_NAME).is_file()
    )
