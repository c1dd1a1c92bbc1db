"""Every pytest-ilp setting, declared once: the fields of `Settings`.

Each field a user sets carries an `Option` in its metadata: its help, how its value is written
(a path, a number, a criterion...) and checked. From the field's name follow its command-line
flag (`--ilp-fragile-margin`), its ini key (`ilp_fragile_margin`) and its ilp.yaml key
(`fragile_margin`); its default is the field's. `OPTIONS` lists them in declaration order:
`options` derives their flags and ini keys (written into `option_table`, which pytest and the
command line's `check` register), `resolve` reads them. Adding a setting is adding a field here,
then running `python -m pytest_ilp.config.options`.

The plugin's entry module registers `option_table`'s literals and imports this module only
once a run may name a checkpoint; it imports no yaml and no torch all the same, so that
`pytest_ilp.check` and the command line stay light until they score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_ilp.config import values
from pytest_ilp.config.values import CriterionRule, Stage
from pytest_ilp.core.backends import BackendOptions, backend_names
from pytest_ilp.core.criteria import EXACT, Criterion
from pytest_ilp.core.render import RENDER_MODES, RenderSettings
from pytest_ilp.core.rule_limits import RuleLimits
from pytest_ilp.core.samples import MustLearnSelector, Sample

if TYPE_CHECKING:
    from pytest_ilp.core.shards import Shard
    from pytest_ilp.core.thresholds import Threshold

__all__ = ["OPTIONS", "CriterionRule", "Option", "Settings", "Stage"]

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_CONFIG_NAME = "ilp.yaml"

#: how a setting is written: a path, several, checkpoints of a history, budgets by cause
#: (merged name by name across sources), a criterion, a scalar, or a structure only ilp.yaml
#: can hold.
Kind = Literal[
    "path", "paths", "history", "budgets", "criterion", "str", "int", "float", "bool", "yaml"
]


@dataclass(frozen=True)
class Option:
    """How users write one setting of `Settings`; `key` and `default` come from its field."""

    help: str
    kind: Kind
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    #: its name in flags, ini keys and ilp.yaml, when that is not the field's.
    key: str = ""
    #: its ilp.yaml key, when that is not `key`.
    yaml_key: str | None = None
    #: ilp.yaml may give a mapping instead, holding the value under this key
    #: (`render: {mode: raw, append_eos: false}`).
    yaml_mapping: str | None = None
    #: checks (and may convert) the value, wherever it came from: (value, flag) -> value.
    check: Callable[[Any, str], Any] | None = None
    #: a structure only ilp.yaml gives (kind "yaml"): (raw, where, ilp.yaml's folder) -> value.
    parse: Callable[[Any, str, Path], Any] | None = None
    #: the `Settings` field it sets, and that field's default as `--help` shows it (filled in
    #: by `OPTIONS`; None for ilp.yaml's structures, whose defaults are made with `Settings`).
    field: str = ""
    default: Any = None

    @property
    def yaml(self) -> str:
        return self.yaml_key or self.key

    @property
    def flag(self) -> str:
        return "--ilp-" + self.key.replace("_", "-")

    @property
    def ini(self) -> str:
        return "ilp_" + self.key

    @property
    def on_command_line(self) -> bool:
        """Whether it has a flag and an ini key (the structures of ilp.yaml have neither)."""
        return self.kind != "yaml"


def option(help: str, kind: Kind, **how: Any) -> dict[str, Option]:
    """A field's metadata declaring it a setting (see `Option` for `how`)."""
    return {"ilp": Option(help, kind, **how)}


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one run. Paths are absolute.

    The fields with an `option` are the settings users write; the last few are parts of
    ilp.yaml's structured values and where they were read from.
    """

    checkpoint: Path = field(
        metadata=option(
            "checkpoint folder (save_pretrained) or .gguf file to test; enables the plugin",
            "path",
            metavar="DIR",
        )
    )
    data: tuple[Path, ...] = field(
        default=(),
        metadata=option(
            "SFT data file or folder (JSONL, JSON, YAML, Parquet, saved dataset); repeatable",
            "paths",
            metavar="PATH",
        ),
    )
    report: Path | None = field(
        default=None, metadata=option("write the JSON report to this path", "path", metavar="PATH")
    )
    backend: str = field(
        default="hf",
        metadata=option(
            "scoring backend", "str", choices=tuple(backend_names()), yaml_mapping="name"
        ),
    )
    device: str = field(
        default="auto", metadata=option("auto, cpu, cuda or cuda:N", "str", check=values.device)
    )
    dtype: str = field(
        default="auto",
        metadata=option(
            "model dtype; auto is float32 on CPU and the saved dtype on a GPU",
            "str",
            choices=DTYPES,
        ),
    )
    batch_tokens: int | None = field(
        default=None,
        metadata=option(
            "token budget of one scoring batch (padded tokens); default 1024 on a CPU, 4096 on "
            "a GPU",
            "int",
            metavar="N",
            check=values.positive,
        ),
    )
    use_cache: bool = field(
        default=True,
        metadata=option("reuse verdicts from pytest's cache folder", "bool", key="cache"),
    )
    #: the run's criterion (command line > ilp.yaml > ini); `criterion_rules` and a record's
    #: own field win over it for their samples, an `ilp_criterion` marker over all.
    criterion: Criterion = field(
        default=EXACT,
        metadata=option(
            "how 'learned' is judged: exact (greedy output is the target), prefix:N, "
            "token_accuracy:X, nll:Y, normalized, choice[:sum|mean] (the record's distractors), "
            "sampled[:n=5,temperature=0.7,min_pass=0.2,seed=0]",
            "criterion",
            metavar="NAME[:ARGS]",
        ),
    )
    render_mode: str = field(
        default="auto",
        metadata=option(
            "how samples become tokens: auto (chat records use the chat template), raw or chat",
            "str",
            choices=RENDER_MODES,
            key="render",
            yaml_mapping="mode",
        ),
    )
    fragile_margin: float = field(
        default=0.1,
        metadata=option(
            "a learned sample whose greedy token leads the runner-up by less than this many "
            "nats somewhere is reported as fragile",
            "float",
            metavar="NATS",
            check=values.non_negative,
        ),
    )
    generate_max_tokens: int = field(
        default=64,
        metadata=option(
            "at most this many tokens are generated to show what an unlearned sample produces",
            "int",
            metavar="N",
            check=values.positive,
        ),
    )
    base: Path | None = field(
        default=None,
        metadata=option(
            "the model fine-tuning started from: gives diagnosis its knowledge signals",
            "path",
            metavar="DIR",
        ),
    )
    history: tuple[Stage, ...] = field(
        default=(),
        metadata=option(
            "earlier checkpoints of sequential fine-tuning, oldest first, comma-separated (or "
            "repeated): gives diagnosis its forgetting and trend signals",
            "history",
            metavar="DIR,DIR",
        ),
    )
    train_log: Path | None = field(
        default=None,
        metadata=option(
            "JSONL of {id, step or epoch, loss} per sample from training: adds "
            "training-dynamics evidence (dataset cartography)",
            "path",
            metavar="PATH",
        ),
    )
    adapter_base: Path | None = field(
        default=None,
        metadata=option(
            "model folder a LoRA/PEFT adapter checkpoint applies to (default: the adapter's "
            "base_model_name_or_path)",
            "path",
            metavar="DIR",
        ),
    )
    trust_remote_code: bool = field(
        default=False,
        metadata=option("let transformers run code shipped with the checkpoint", "bool"),
    )
    # -- the CI gate (README "CI gate") --
    #: the run's thresholds (command line > ilp.yaml > ini, per name); markers add their own.
    thresholds: Mapping[str, Threshold] = field(
        default_factory=dict,
        metadata=option(
            "budget of unlearned samples: CAUSE=SHARE (0.02 or 2%%) or CAUSE=COUNT (5), for a "
            "cause, total or regressions; repeatable; an ilp_threshold marker wins over it",
            "budgets",
            metavar="CAUSE=BUDGET",
            key="threshold",
            yaml_key="thresholds",
        ),
    )
    strict: bool = field(
        default=False,
        metadata=option("every unlearned sample fails, whatever the budgets", "bool"),
    )
    baseline: Path | None = field(
        default=None,
        metadata=option(
            "compare with this earlier JSON report: samples unlearned there too are known and "
            "tolerated, new failures count against the budgets",
            "path",
            metavar="PATH",
        ),
    )
    update_baseline: bool = field(
        default=False,
        metadata=option(
            "write this run's JSON report to the --ilp-baseline path after the run", "bool"
        ),
    )
    markdown: Path | None = field(
        default=None,
        metadata=option(
            "write a Markdown summary to this path (it is also appended to "
            "$GITHUB_STEP_SUMMARY when that is set)",
            "path",
            metavar="PATH",
        ),
    )
    html: Path | None = field(
        default=None,
        metadata=option(
            "write a self-contained HTML report (charts, and every sample with its evidence) "
            "to this path",
            "path",
            metavar="PATH",
        ),
    )
    export: Path | None = field(
        default=None,
        metadata=option(
            "write the unlearned samples (their records, with cause and suggested fix) as JSONL",
            "path",
            metavar="PATH",
        ),
    )
    shard: Shard | None = field(
        default=None,
        metadata=option(
            "check only shard I of N of the samples (split by a hash of the sample id)",
            "str",
            metavar="I/N",
            check=values.shard,
        ),
    )
    # -- structures only ilp.yaml holds --
    must_learn: MustLearnSelector = field(
        default_factory=MustLearnSelector,
        metadata=option("must-learn selectors: {tags, ids}", "yaml", parse=values.must_learn),
    )
    diagnosis: RuleLimits = field(
        default_factory=RuleLimits,
        metadata=option("the thresholds of the diagnosis rules", "yaml", parse=values.rule_limits),
    )
    criterion_rules: tuple[CriterionRule, ...] = field(
        default=(),
        metadata=option(
            "criteria per data file or tag: a list of {files, tags, criterion}",
            "yaml",
            key="criteria",
            parse=values.criterion_rules,
        ),
    )
    # -- parts of ilp.yaml's `render:` and `backend:` mappings, and where it was --
    append_eos: bool = True
    add_special_tokens: bool = True
    #: ilp.yaml's `backend.args`, for the backend it names.
    backend_args: Mapping[str, Any] = field(default_factory=dict)
    config_file: Path | None = None

    @property
    def backend_options(self) -> BackendOptions:
        """What the backend loads the model with."""
        return BackendOptions(
            device=self.device,
            dtype=self.dtype,
            batch_tokens=self.batch_tokens,
            trust_remote_code=self.trust_remote_code,
            adapter_base=self.adapter_base,
            args=self.backend_args,
        )

    @property
    def render(self) -> RenderSettings:
        """How samples become tokens."""
        return RenderSettings(self.render_mode, self.append_eos, self.add_special_tokens)

    def with_backend_options(self, options: BackendOptions) -> Settings:
        """These settings loading the model with `options` instead."""
        return replace(
            self,
            device=options.device,
            dtype=options.dtype,
            batch_tokens=options.batch_tokens,
            trust_remote_code=options.trust_remote_code,
            adapter_base=options.adapter_base,
            backend_args=options.args,
        )

    def with_render(self, render: RenderSettings) -> Settings:
        """These settings rendering samples as `render` says instead."""
        return replace(
            self,
            render_mode=render.mode,
            append_eos=render.append_eos,
            add_special_tokens=render.add_special_tokens,
        )

    def criterion_for(self, sample: Sample) -> Criterion:
        """A sample's criterion without markers: its record's field, else the first ilp.yaml
        rule that matches it, else the run's."""
        if sample.criterion is not None:
            return sample.criterion
        rule = next((r for r in self.criterion_rules if r.matches(sample)), None)
        return rule.criterion if rule is not None else self.criterion


def _declared() -> tuple[Option, ...]:
    found = []
    for f in fields(Settings):
        declared: Option | None = f.metadata.get("ilp")
        if declared is None:
            continue
        default: Any = None  # ilp.yaml's structures: their defaults are never shown or read
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING and declared.on_command_line:
            default = f.default_factory()
        found.append(replace(declared, field=f.name, key=declared.key or f.name, default=default))
    return tuple(found)


#: every setting, in declaration order (the order of `--help` and of ilp.yaml's known keys).
OPTIONS = _declared()
BY_KEY = {o.key: o for o in OPTIONS}
#: the keys ilp.yaml accepts.
YAML_KEYS = tuple(o.yaml for o in OPTIONS)
