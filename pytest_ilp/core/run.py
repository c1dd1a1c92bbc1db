"""`check`: the whole pytest-ilp check of a checkpoint on a data set, without pytest.

    import pytest_ilp

    run = pytest_ilp.check("out/final", "data/sft.jsonl", base="HuggingFaceTB/base",
                           thresholds={"knowledge_conflict": 0.02, "total": 0.1})
    print(run.gate.passed, run.verdict_line)
    for sample_id, diagnosis in run.diagnoses.items():
        print(sample_id, diagnosis.cause, diagnosis.suggestion)

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

from pytest_ilp.config.settings import Settings, Stage
from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.core.backends import BackendOptions, Progress
from pytest_ilp.core.criteria import Criterion, parse_criterion
from pytest_ilp.core.diagnosis import Diagnosis, diagnose
from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.gate import GateResult, verdict_line
from pytest_ilp.core.pipeline import Diagnoser, Pipeline, ProgressFactory
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.signals import Signals
from pytest_ilp.core.thresholds import Threshold, check_names, threshold_mapping, valid_names
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
    checkpoint: PathLike,
    data: PathLike | Iterable[PathLike],
    *,
    base: PathLike | None = None,
    history: Sequence[PathLike | tuple[str, PathLike]] = (),
    train_log: PathLike | None = None,
    config: Settings | None = None,
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
    """Check that `checkpoint` learned the samples of `data` (files or folders), diagnose the
    unlearned ones and apply the gate: the verdicts, signals, diagnoses, gate and report of
    a pytest-ilp run over that data.

    :param base: the base model the fine-tune started from (`--ilp-base`): tells missing
        knowledge and knowledge conflicts.
    :param history: earlier checkpoints, oldest first (`--ilp-history`), each a path or a
        `(stage name, path)` pair: tells forgetting.
    :param train_log: a training log or an `ILPCallback` trajectory (`--ilp-train-log`).
    :param config: settings to start from (every other argument given wins over them);
        by default, pytest-ilp's defaults.
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
    settings = _settings(
        config or Settings(checkpoint=Path(checkpoint)),
        checkpoint=Path(checkpoint),
        data=_paths(data),
        base=Path(base) if base is not None else None,
        history=tuple(_stage(entry) for entry in history),
        train_log=Path(train_log) if train_log is not None else None,
        criterion=parse_criterion(criterion) if criterion is not None else None,
        thresholds=_thresholds(thresholds, causes) if thresholds is not None else None,
        baseline=Path(baseline) if baseline is not None else None,
        strict=strict,
        backend=backend,
        backend_options=options,
        use_cache=cache_dir is not None if cache_dir is not None or config is None else None,
    )
    rootpath = Path(root) if root is not None else Path.cwd()
    pipeline = Pipeline.create(
        settings, rootpath, Path(cache_dir) if cache_dir is not None else None
    )
    samples: list[Sample] = []
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
    )


def _settings(start: Settings, **given: Any) -> Settings:
    """`start` with every argument that was given (not None) put in."""
    return replace(start, **{k: v for k, v in given.items() if v is not None})


def _paths(data: PathLike | Iterable[PathLike]) -> tuple[Path, ...]:
    if isinstance(data, (str, Path)):
        return (Path(data),)
    return tuple(Path(p) for p in data)


def _stage(entry: PathLike | tuple[str, PathLike]) -> Stage:
    if isinstance(entry, tuple):
        name, path = entry
        return Stage(name, Path(path))
    return Stage(None, Path(entry))


def _thresholds(
    raw: Mapping[str, float | int | str], causes: Sequence[str]
) -> dict[str, Threshold]:
    check_names(raw, "thresholds", valid_names(causes))
    return threshold_mapping(raw, "thresholds")


def _quiet(message: str) -> None:
    return None


def _no_progress(total: int) -> Progress:
    return _advance


def _advance(done: int) -> None:
    return None
