"""`check`: the whole pytest-ilp check of a checkpoint on a data set, without pytest.

    import pytest_ilp

    run = pytest_ilp.check("out/final", "data/sft.jsonl", base="HuggingFaceTB/base",
                           thresholds={"knowledge_conflict": 0.02, "total": 0.1})
    print(run.gate.passed, run.verdict_line)
    for sample_id, diagnosis in run.diagnoses.items():
        print(sample_id, diagnosis.cause, diagnosis.suggestion)

    run = pytest_ilp.check(config="ilp.yaml", strict=True)  # the file's settings, one changed
    run = pytest_ilp.check(model=model, tokenizer=tokenizer, data="data/sft.jsonl")  # in memory

The same steps, in the same order, as `pytest --ilp-checkpoint=out/final --ilp-data=...`
(see `pipeline`), with every sample of the data in scope (or those of `scope`) under the run's
own thresholds: the verdicts, their signals and diagnoses, the gate's decisions and the JSON
report are those a pytest run over the same data writes. The trainer callback's end-of-training
report is a `check` of the model in memory. Bad input raises the core's errors
(`IlpUsageError`, `IlpDataError`) with the message a pytest run prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_ilp.config.resolve import Given, config_file, settings_from
from pytest_ilp.config.settings import Settings, Stage
from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.core.backends import BackendOptions, LiveModel, Progress
from pytest_ilp.core.criteria import Criterion, parse_criterion
from pytest_ilp.core.diagnosis import Diagnosis, diagnose
from pytest_ilp.core.errors import IlpDataError, IlpUsageError
from pytest_ilp.core.gate import GateResult, verdict_line
from pytest_ilp.core.output import RunOutput
from pytest_ilp.core.pipeline import Diagnoser, Pipeline, ProgressFactory
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring import ScoringResult
from pytest_ilp.core.signals import Signals
from pytest_ilp.core.thresholds import check_names, threshold_mapping, valid_names
from pytest_ilp.core.train_log import TrainLog, parse_train_log
from pytest_ilp.core.verdicts import Verdict
from pytest_ilp.report.build import SampleOutcome
from pytest_ilp.report.model import Report
from pytest_ilp.report.records import json_text

PathLike = str | Path
#: what the report calls a model in memory given no checkpoint name.
IN_MEMORY = Path("in-memory")


@dataclass(frozen=True)
class Run:
    """What `check` found: per sample, its verdict (or why it could not be checked), and for
    an unlearned one its signals and diagnosis; the gate's decisions; the JSON report."""

    #: the samples checked: every sample of the data in data order (those that cannot be
    #: checked too), or those of `check(scope=...)` in its order.
    samples: tuple[Sample, ...]
    verdicts: Mapping[str, Verdict]
    #: sample id -> why it could not be checked (an empty target, too long for the model).
    problems: Mapping[str, str]
    signals: Mapping[str, Signals]
    diagnoses: Mapping[str, Diagnosis]
    #: the gate's decisions; None when `check(gate=False)` decided none.
    gate: GateResult | None
    #: the `--ilp-report` document (docs/json-report.md); `report.to_dict()` is its JSON.
    report: Report
    outcomes: tuple[SampleOutcome, ...]
    #: what a pytest run writes its files from: the report, the export, the timing.
    output: RunOutput

    @property
    def passed(self) -> bool:
        """Whether the gate passes: what a pytest run's exit status says."""
        return self._decided().passed

    @property
    def verdict_line(self) -> str:
        """ "ilp gate: PASSED — ..." or "ilp gate: FAILED — ...", as pytest prints it."""
        return verdict_line(self._decided())

    def _decided(self) -> GateResult:
        if self.gate is None:
            raise IlpUsageError("check(gate=False) decided no gate: read the verdicts instead")
        return self.gate

    @property
    def unlearned(self) -> list[str]:
        """The ids of the samples the checkpoint did not learn, in the order of `samples`."""
        return [
            s.id for s in self.samples if s.id in self.verdicts and not self.verdicts[s.id].learned
        ]

    def write_report(self, path: PathLike) -> Path:
        """Write the JSON report (atomically) where `--ilp-report` would; returns its path."""
        target = Path(path)
        write_text_atomic(target, self.report.to_json())
        return target


def check(
    checkpoint: PathLike | None = None,
    data: PathLike | Iterable[PathLike] | Iterable[Sample] | None = None,
    *,
    config: Settings | PathLike | Mapping[str, Any] | None = None,
    model: Any = None,
    tokenizer: Any = None,
    scope: Iterable[str] | None = None,
    scored: ScoringResult | None = None,
    base: PathLike | None = None,
    history: Sequence[PathLike | tuple[str, PathLike]] | None = None,
    train_log: PathLike | Iterable[Mapping[str, Any]] | None = None,
    criterion: Criterion | str | Mapping[str, Any] | None = None,
    thresholds: Mapping[str, float | int | str] | None = None,
    baseline: PathLike | None = None,
    strict: bool | None = None,
    backend: str | None = None,
    options: BackendOptions | None = None,
    cache_dir: PathLike | None = None,
    root: PathLike | None = None,
    diagnoser: Diagnoser | None = None,
    causes: Sequence[str] = (),
    gate: bool = True,
    log: Callable[[str], None] | None = None,
    progress: ProgressFactory | None = None,
) -> Run:
    """Check that `checkpoint` learned the samples of `data`, diagnose the unlearned ones and
    apply the gate: the verdicts, signals, diagnoses, gate and report of a pytest-ilp run over
    that data.

    Settings come as in a pytest run, the first that sets one winning: these keyword
    arguments (as its command line), then `config` (as its ilp.yaml), then the defaults.
    Thresholds are merged name by name. Relative paths in arguments start from the current
    folder, those in an ilp.yaml from its folder.

    :param checkpoint: a `save_pretrained` folder or a .gguf file (or `checkpoint` in `config`);
        with `model`, only the name the report gives it (default "in-memory").
    :param data: data files or folders, or `Sample`s read already
        (`pytest_ilp.api.read_samples`); or `data` in `config`.
    :param config: an ilp.yaml path; or a mapping of its keys (`{"fragile_margin": 0.2,
        "render": {"mode": "raw"}}`); or a whole `pytest_ilp.config.settings.Settings`.
    :param model: a transformers causal LM in memory (a training run's), checked instead of
        loading a checkpoint, with `tokenizer`, which renders the samples. It is scored as
        it is, on its own device and in its own dtype, in eval mode for the pass and put back
        in the mode it was in; nothing is cached. Its verdicts are those of `checkpoint` saved
        with `save_pretrained` (in that dtype).
    :param scope: the ids of the samples to check, in this order (default: every sample of
        the data). The rest of the data is still the data whose near-duplicates and
        inconsistent targets the diagnosis looks at; thresholds are shares of the scope.
    :param scored: the verdicts of the checkpoint (or `model`) under test on every sample in
        scope, scored already (`pytest_ilp.api.score_model`, as the trainer callback's last
        point does): taken as they are instead of scoring again.
    :param base: the base model the fine-tune started from (`--ilp-base`): tells missing
        knowledge and knowledge conflicts.
    :param history: earlier checkpoints, oldest first (`--ilp-history`), each a path or a
        `(stage name, path)` pair: tells forgetting.
    :param train_log: a training log or an `ILPCallback` trajectory (`--ilp-train-log`): its
        path, or its records (`{"id", "step", "learned", "nll", ...}` mappings).
    :param criterion: judges every sample whose record names none (`"token_accuracy:0.9"`,
        `{"sampled": {"n": 5}}`, see `pytest_ilp.core.criteria`).
    :param thresholds: the most unlearned samples each cause may have, as `--ilp-threshold`
        and ilp.yaml `thresholds:` give them: a share (`0.02`, `"2%"`) or a count (`5`), by
        cause name, `total` or `regressions`.
    :param baseline: an earlier JSON report (`--ilp-baseline`): its unlearned samples are known.
    :param strict: every unlearned sample fails the gate (`--ilp-strict`).
    :param backend: "hf" (default) or "vllm"; `options`: its device, dtype, batch size.
    :param cache_dir: a score cache folder (off by default): a second check of the same
        checkpoint and data reads its verdicts from there.
    :param root: the folder report paths are written relative to (default: the current one).
    :param diagnoser: decides a cause from `(sample, verdict, signals)` (default: the built-in
        rules, `pytest_ilp.core.diagnosis.diagnose`).
    :param causes: the names of the causes of your own that `diagnoser` may return: thresholds
        may name them (a `pytest_ilp_causes` hook's job in a pytest run).
    :param gate: False: decide no gate (`Run.gate` is None and the report has none, as the
        trainer callback's): the verdicts and diagnoses alone.
    :param log: receives the lines a pytest run prints with an "ilp: " prefix.
    :param progress: called with the number of samples to score, returns the callback told
        how many more were scored.
    """
    given_samples, data_paths = _data(data)
    live = _live(model, tokenizer, cache_dir)
    log_path, log_records = _train_log(train_log)
    valid = valid_names(causes)
    if thresholds is not None:
        check_names(thresholds, "thresholds", valid)
    given = {
        name: value
        for name, value in {
            "checkpoint": _absolute(checkpoint),
            "data": data_paths,
            "base": _absolute(base),
            "history": tuple(_stage(e) for e in history) if history is not None else None,
            "train_log": log_path,
            "criterion": parse_criterion(criterion) if criterion is not None else None,
            "thresholds": threshold_mapping(thresholds, "thresholds") if thresholds else None,
            "baseline": _absolute(baseline),
            "strict": strict,
            "backend": backend,
            "use_cache": True if cache_dir is not None else None,
        }.items()
        if value is not None
    }
    settings = _settings(config, given, valid, IN_MEMORY if live is not None else None)
    if options is not None:
        settings = settings.with_backend_options(options)
    if live is not None and settings.backend != "hf":
        raise IlpUsageError(
            f"check(model=...): a model in memory is scored by the hf backend, not "
            f"{settings.backend!r}: save it with save_pretrained to check it with another"
        )
    rootpath = Path(root) if root is not None else Path.cwd()
    pipeline = Pipeline.create(
        settings,
        rootpath,
        Path(cache_dir) if cache_dir is not None else None,
        live=live,
        train_log=log_records,
    )
    everything: list[Sample] = pipeline.add_samples(given_samples)
    for path in pipeline.data_files:
        everything += pipeline.samples_of(path)
    if not everything:
        raise IlpDataError(
            f"no samples in {', '.join(str(p) for p in settings.data) or 'the data given'}"
        )
    samples = _scoped(everything, scope)
    limits = settings.diagnosis
    pipeline.score(
        [(s, s.must_learn) for s in samples],
        log or _quiet,
        progress or _no_progress,
        diagnoser or (lambda sample, verdict, signals: diagnose(sample, verdict, signals, limits)),
        scored=scored,
    )
    decided = (
        pipeline.apply_gate({"": (settings.thresholds, [s.id for s in samples])}) if gate else None
    )
    output = pipeline.output()
    assert pipeline.result is not None
    return Run(
        samples=tuple(samples),
        verdicts=dict(pipeline.result.verdicts),
        problems=dict(pipeline.result.problems),
        signals=dict(pipeline.signals),
        diagnoses=dict(pipeline.diagnoses),
        gate=decided,
        report=output.report,
        outcomes=tuple(pipeline.outcomes()),
        output=output,
    )


def _settings(
    config: Settings | PathLike | Mapping[str, Any] | None,
    given: Mapping[str, Any],
    valid: Sequence[str],
    unnamed: Path | None = None,
) -> Settings:
    """The keyword arguments `given` (by `Settings` field) over `config` over the defaults;
    `unnamed`: the checkpoint when none is given (a model in memory's name)."""
    if isinstance(config, Settings):
        thresholds = {**config.thresholds, **given.get("thresholds", {})}
        return replace(config, **{**given, "thresholds": thresholds})
    file = config_file(config) if config is not None else None
    if "checkpoint" not in given and (file is None or file.values.get("checkpoint") is None):
        if unnamed is None:
            raise IlpUsageError(
                f"{file.where}: sets no `checkpoint`; set one there or pass check(checkpoint=...)"
                if file is not None
                else "check(): no checkpoint given: pass a checkpoint, or a config that sets one"
            )
        given = {**given, "checkpoint": unnamed}
    settings = settings_from([Given(given), *([file] if file is not None else [])], file)
    if file is not None and isinstance(file.values.get("thresholds"), Mapping):
        check_names(file.values["thresholds"], f"{file.where}: thresholds", valid)
    return settings


def _live(model: Any, tokenizer: Any, cache_dir: PathLike | None) -> LiveModel | None:
    """`check`'s model in memory, if one is given, with its tokenizer."""
    if model is None:
        if tokenizer is not None:
            raise IlpUsageError(
                "check(tokenizer=...) goes with model=...: a checkpoint's own tokenizer is read "
                "from its folder"
            )
        return None
    if tokenizer is None:
        raise IlpUsageError("check(model=...) needs the tokenizer that renders the samples too")
    if cache_dir is not None:
        raise IlpUsageError(
            "check(model=...): a model in memory is never cached (its weights change while it "
            "trains): leave cache_dir out"
        )
    return LiveModel(model, tokenizer)


def _train_log(
    train_log: PathLike | Iterable[Mapping[str, Any]] | None,
) -> tuple[Path | None, TrainLog | None]:
    """A training log's path, or its records read as `--ilp-train-log` reads its file."""
    if train_log is None or isinstance(train_log, (str, Path)):
        return _absolute(train_log), None
    lines = (json_text(record, indent=None) for record in train_log)
    return None, parse_train_log(lines, "check(train_log=...) record")


def _scoped(samples: Sequence[Sample], scope: Iterable[str] | None) -> list[Sample]:
    """The samples `scope` names, in its order (each once); all of them without one."""
    if scope is None:
        return list(samples)
    by_id = {s.id: s for s in samples}
    ids = list(dict.fromkeys([scope] if isinstance(scope, str) else scope))
    if not ids:
        raise IlpUsageError("check(scope=...) names no sample: give ids, or leave it out")
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise IlpUsageError(
            f"check(scope=...): {len(unknown)} id(s) are no sample of the data "
            f"({', '.join(map(repr, unknown[:5]))}): give the ids of samples of `data`"
        )
    return [by_id[i] for i in ids]


def _absolute(path: PathLike | None) -> Path | None:
    return Path(path).absolute() if path is not None else None


def _data(
    data: PathLike | Iterable[PathLike] | Iterable[Sample] | None,
) -> tuple[list[Sample], tuple[Path, ...] | None]:
    """`check`'s data: the samples given, and the paths given (None: none given)."""
    if data is None:
        return [], None
    if isinstance(data, (str, Path)):
        return [], (Path(data).absolute(),)
    items = list(data)
    samples = [i for i in items if isinstance(i, Sample)]
    paths = tuple(Path(i).absolute() for i in items if not isinstance(i, Sample))
    if samples and paths:
        raise IlpUsageError("check(data=...): give paths or samples, not both")
    return samples, paths or None


def _stage(entry: PathLike | tuple[str, PathLike]) -> Stage:
    if isinstance(entry, tuple):
        name, path = entry
        return Stage(name, Path(path).absolute())
    return Stage(None, Path(entry).absolute())


def _quiet(message: str) -> None:
    return None


def _no_progress(total: int) -> Progress:
    return _advance


def _advance(done: int) -> None:
    return None
