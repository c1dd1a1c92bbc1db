"""Every pytest-ilp setting, declared once: its ilp.yaml key, command-line flag, ini key, type
and help (`SETTINGS`), and the options pytest registers from it (`add_options`).

The entry module registers these on every pytest run of every project that has pytest-ilp
installed, checkpoint or not (`--help` lists them, `-p no:ilp` removes them), so this module
imports only the few light core modules whose names the table shows (backends, criteria,
render modes). `settings` reads the values into a frozen `Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_ilp.core.backends import backend_names
from pytest_ilp.core.criteria import EXACT, Criterion
from pytest_ilp.core.render import RENDER_MODES

if TYPE_CHECKING:
    import pytest

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_CONFIG_NAME = "ilp.yaml"


@dataclass(frozen=True)
class Setting:
    """One setting: its ilp.yaml key, command-line flag, ini key and type."""

    key: str
    help: str
    # "path", "paths", "history", "budgets", "criterion", "str", "int", "float", "bool"
    kind: str
    default: Any = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    #: its ilp.yaml key, when that is not `key`.
    yaml_key: str | None = None

    @property
    def yaml(self) -> str:
        return self.yaml_key or self.key

    @property
    def flag(self) -> str:
        return "--ilp-" + self.key.replace("_", "-")

    @property
    def ini(self) -> str:
        return "ilp_" + self.key


SETTINGS = (
    Setting(
        "checkpoint",
        "checkpoint folder (save_pretrained) or .gguf file to test; enables the plugin",
        "path",
        metavar="DIR",
    ),
    Setting(
        "data",
        "SFT data file or folder (JSONL, JSON, YAML, Parquet, saved dataset); repeatable",
        "paths",
        default=(),
        metavar="PATH",
    ),
    Setting("report", "write the JSON report to this path", "path", metavar="PATH"),
    Setting("backend", "scoring backend", "str", default="hf", choices=tuple(backend_names())),
    Setting("device", "auto, cpu, cuda or cuda:N", "str", default="auto"),
    Setting(
        "dtype",
        "model dtype; auto is float32 on CPU and the saved dtype on a GPU",
        "str",
        default="auto",
        choices=DTYPES,
    ),
    Setting(
        "batch_tokens",
        "token budget of one scoring batch (padded tokens); default 1024 on a CPU, 4096 on a GPU",
        "int",
        metavar="N",
    ),
    Setting("cache", "reuse verdicts from pytest's cache folder", "bool", default=True),
    Setting(
        "criterion",
        "how 'learned' is judged: exact (greedy output is the target), prefix:N, "
        "token_accuracy:X, nll:Y, normalized, choice[:sum|mean] (the record's distractors), "
        "sampled[:n=5,temperature=0.7,min_pass=0.2,seed=0]",
        "criterion",
        default=EXACT,
        metavar="NAME[:ARGS]",
    ),
    Setting(
        "render",
        "how samples become tokens: auto (chat records use the chat template), raw or chat",
        "str",
        default="auto",
        choices=RENDER_MODES,
    ),
    Setting(
        "fragile_margin",
        "a learned sample whose greedy token leads the runner-up by less "
        "than this many nats somewhere is reported as fragile",
        "float",
        default=0.1,
        metavar="NATS",
    ),
    Setting(
        "generate_max_tokens",
        "at most this many tokens are generated to show what an unlearned sample produces",
        "int",
        default=64,
        metavar="N",
    ),
    Setting(
        "base",
        "the model fine-tuning started from: gives diagnosis its knowledge signals",
        "path",
        metavar="DIR",
    ),
    Setting(
        "history",
        "earlier checkpoints of sequential fine-tuning, oldest first, comma-separated (or "
        "repeated): gives diagnosis its forgetting and trend signals",
        "history",
        default=(),
        metavar="DIR,DIR",
    ),
    Setting(
        "train_log",
        "JSONL of {id, step or epoch, loss} per sample from training: adds training-dynamics "
        "evidence (dataset cartography)",
        "path",
        metavar="PATH",
    ),
    Setting(
        "adapter_base",
        "model folder a LoRA/PEFT adapter checkpoint applies to (default: the adapter's "
        "base_model_name_or_path)",
        "path",
        metavar="DIR",
    ),
    Setting(
        "trust_remote_code",
        "let transformers run code shipped with the checkpoint",
        "bool",
        default=False,
    ),
    # -- the CI gate (README "CI gate") --
    Setting(
        "threshold",
        "budget of unlearned samples: CAUSE=SHARE (0.02 or 2%%) or CAUSE=COUNT (5), for a "
        "cause, total or regressions; repeatable; an ilp_threshold marker wins over it",
        "budgets",
        default=(),
        metavar="CAUSE=BUDGET",
        yaml_key="thresholds",
    ),
    Setting("strict", "every unlearned sample fails, whatever the budgets", "bool", default=False),
    Setting(
        "baseline",
        "compare with this earlier JSON report: samples unlearned there too are known and "
        "tolerated, new failures count against the budgets",
        "path",
        metavar="PATH",
    ),
    Setting(
        "update_baseline",
        "write this run's JSON report to the --ilp-baseline path after the run",
        "bool",
        default=False,
    ),
    Setting(
        "markdown",
        "write a Markdown summary to this path (it is also appended to $GITHUB_STEP_SUMMARY "
        "when that is set)",
        "path",
        metavar="PATH",
    ),
    Setting(
        "html",
        "write a self-contained HTML report (charts, and every sample with its evidence) to "
        "this path",
        "path",
        metavar="PATH",
    ),
    Setting(
        "export",
        "write the unlearned samples (their records, with cause and suggested fix) as JSONL",
        "path",
        metavar="PATH",
    ),
    Setting(
        "shard",
        "check only shard I of N of the samples (split by a hash of the sample id)",
        "str",
        metavar="I/N",
    ),
)
BY_KEY = {s.key: s for s in SETTINGS}
#: keys ilp.yaml accepts: the settings above, and the structured ones below.
YAML_KEYS = (*(s.yaml for s in SETTINGS), "must_learn", "diagnosis", "criteria")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("ilp", "pytest-ilp: test that a checkpoint learned its SFT data")
    for setting in SETTINGS:
        help_text = setting.help
        if setting.kind == "bool":
            negative = setting.default is True
            flag = "--ilp-no-" + setting.key.replace("_", "-") if negative else setting.flag
            group.addoption(
                flag,
                action="store_const",
                const=not negative,
                default=None,
                dest="ilp_" + setting.key,
                help=("do not " if negative else "") + help_text,
            )
        else:
            group.addoption(
                setting.flag,
                action="append" if setting.kind in ("paths", "history", "budgets") else "store",
                dest="ilp_" + setting.key,
                default=None,
                metavar=setting.metavar or setting.key.upper(),
                choices=setting.choices or None,
                help=help_text
                + (f" (default: {_shown(setting.default)})" if setting.default else ""),
            )
        ini_type = {
            "path": "paths",
            "paths": "paths",
            "history": "args",  # split on commas as well as whitespace, see _from_ini
            "bool": "bool",
            "budgets": "args",
        }.get(setting.kind, "string")
        parser.addini(setting.ini, help_text, type=ini_type, default=None)  # type: ignore[arg-type]
    group.addoption(
        "--ilp-config",
        dest="ilp_config",
        default=None,
        metavar="PATH",
        help=f"ilp.yaml with the settings above and more (default: {DEFAULT_CONFIG_NAME} in "
        "the rootdir, if present)",
    )
    parser.addini("ilp_config", "path of ilp.yaml", type="paths", default=None)


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
