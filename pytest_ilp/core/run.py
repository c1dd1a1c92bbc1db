"""`check`: the whole pytest-ilp check of a checkpoint on a data set, without pytest.

    import pytest_ilp

    run = pytest_ilp.check("out/final", "data/sft.jsonl", base="HuggingFaceTB/base",
                           thresholds={"knowledge_conflict": 0.02, "total": 0.1})
    print(run.gate.passed, run.verdict_line)
    for sample_id, diagnosis in run.diagnoses.items():
        print(sample_id, diagnosis.cause, diagnosis.suggestion)

    run = pytest_ilp.check(config="ilp.yaml", strict=True)  # the file's settings, one changed

The same steps, in the same order, as `pytest --ilp-checkpoint=out/final --ilp-data=...`
(see `pipeline`), with every sample of the data in scope under the run's own thresholds: the
verdicts, their signals and diagnoses, the gate's decisions and the JSON report are those a
pytest run over the same data writes. Bad input raises the core's errors (`IlpUsageError`,
`IlpDataError`) with the message a pytest run prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_ilp.config.resolve import Given, config_file, settings_from
from pytest_ilp.config.settings import Settings, Stage
from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.core.backends import BackendOptions, Progress
from pytest_ilp.core.criteria import Criterion, parse_criterion
from pytest_ilp.core.diagnosis import Diagnosis, diagnose
from pytest_ilp.core.errors import IlpDataError, IlpUsageError
from pytest_ilp.core.gate import GateResult, verdict_line
from pytest_ilp.core.output import RunOutput
from pytest_ilp.core.pipeline import Diagnoser, Pipeline, ProgressFactory
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.signals import Signals
from pytest_ilp.core.thresholds import check_names, threshold_mapping, valid_names
from pytest_ilp.core.verdicts import Verdict
from pytest_ilp.report.build import SampleOutcome
from pytest_ilp.report.model import Report

PathLike = str | Path


@dataclass(frozen=True)
class Run:
    """What `check` found: per sample, its verdict (or why it could not be checked), and for
    an unlearned one its signals and diagnosis; the gate's decisions; the JSON report."""

    #: every sample of the data, in data order (those that cannot be checked too).
    samples: tuple[Sample, ...]
    verdicts: Mapping[str, Verdict]
    #: sample id -> why it could not be checked (an empty target, too long for the model).
    problems: Mapping[str, str]
    signals: Mapping[str, Signals]
    diagnoses: Mapping[str, Diagnosis]
    gate: GateResult
    #: the `--ilp-report` document (docs/json-report.md); `report.to_dict()` is its JSON.
    report: Report
    outcomes: tuple[SampleOutcome, ...]
    #: what a pytest run writes its files from: the report, the export, the timing.
    output: RunOutput

    @property
    def passed(self) -> bool:
        """Whether the gate passes: what a pytest run's exit status says."""
        return self.gate.passed

    @property
    def verdict_line(self) -> str:
        """ "ilp gate: PASSED — ..." or "ilp gate: FAILED — ...", as pytest prints it."""
        return verdict_line(self.gate)

    @property
    def unlearned(self) -> list[str]:
        """The ids of the samples the checkpoint did not learn, in data order."""
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
    base: PathLike | None = None,
    history: Sequence[PathLike | tuple[str, PathLike]] | None = None,
    train_log: PathLike | None = None,
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

    :param checkpoint: a `save_pretrained` folder or a .gguf file (or `checkpoint` in `config`).
    :param data: data files or folders, or `Sample`s read already
        (`pytest_ilp.api.read_samples`); or `data` in `config`.
    :param config: an ilp.yaml path; or a mapping of its keys (`{"fragile_margin": 0.2,
        "render": {"mode": "raw"}}`); or a whole `pytest_ilp.config.settings.Settings`.
    :param base: the base model the fine-tune started from (`--ilp-base`): tells missing
        knowledge and knowledge conflicts.
    :param history: earlier checkpoints, oldest first (`--ilp-history`), each a path or a
        `(stage name, path)` pair: tells forgetting.
    :param train_log: a training log or an `ILPCallback` trajectory (`--ilp-train-log`).
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
    :param log: receives the lines a pytest run prints with an "ilp: " prefix.
    :param progress: called with the number of samples to score, returns the callback told
        how many more were scored.
    """
    given_samples, data_paths = _data(data)
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
            "train_log": _absolute(train_log),
            "criterion": parse_criterion(criterion) if criterion is not None else None,
            "thresholds": threshold_mapping(thresholds, "thresholds") if thresholds else None,
            "baseline": _absolute(baseline),
            "strict": strict,
            "backend": backend,
            "use_cache": True if cache_dir is not None else None,
        }.items()
        if value is not None
    }
    settings = _settings(config, given, valid)
    if options is not None:
        settings = settings.with_backend_options(options)
    rootpath = Path(root) if root is not None else Path.cwd()
    pipeline = Pipeline.create(
        settings, rootpath, Path(cache_dir) if cache_dir is not None else None
    )
    samples: list[Sample] = pipeline.add_samples(given_samples)
    for path in pipeline.data_files:
        samples += pipeline.samples_of(path)
    if not samples:
        raise IlpDataError(
            f"no samples in {', '.join(str(p) for p in settings.data) or 'the data given'}"
        )
    limits = settings.diagnosis
    pipeline.score(
        [(s, s.must_learn) for s in samples],
        log or _quiet,
        progress or _no_progress,
        diagnoser or (lambda sample, verdict, signals: diagnose(sample, verdict, signals, limits)),
    )
    gate = pipeline.apply_gate({"": (settings.thresholds, [s.id for s in samples])})
    output = pipeline.output()
    assert pipeline.result is not None
    return Run(
        samples=tuple(samples),
        verdicts=dict(pipeline.result.verdicts),
        problems=dict(pipeline.result.problems),
        signals=dict(pipeline.signals),
        diagnoses=dict(pipeline.diagnoses),
        gate=gate,
        report=output.report,
        outcomes=tuple(pipeline.outcomes()),
        output=output,
    )


def _settings(
    config: Settings | PathLike | Mapping[str, Any] | None,
    given: Mapping[str, Any],
    valid: Sequence[str],
) -> Settings:
    """The keyword arguments `given` (by `Settings` field) over `config` over the defaults."""
    if isinstance(config, Settings):
        thresholds = {**config.thresholds, **given.get("thresholds", {})}
        return replace(config, **{**given, "thresholds": thresholds})
    file = config_file(config) if config is not None else None
    if "checkpoint" not in given and (file is None or file.values.get("checkpoint") is None):
        raise IlpUsageError(
            f"{file.where}: sets no `checkpoint`; set one there or pass check(checkpoint=...)"
            if file is not None
            else "check(): no checkpoint given: pass a checkpoint, or a config that sets one"
        )
    settings = settings_from([Given(given), *([file] if file is not None else [])], file)
    if file is not None and isinstance(file.values.get("thresholds"), Mapping):
        check_names(file.values["thresholds"], f"{file.where}: thresholds", valid)
    return settings


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
