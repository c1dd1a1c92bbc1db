"""What one run found, and what follows from it: each sample's outcome, the gate's decisions
on them, and the run's output (the JSON report, the export).

`Pipeline` fills these in (scoring, signals, diagnosis); the pytest plugin and
`pytest_ilp.check` read them through the methods here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_ilp.config.settings import Settings
from pytest_ilp.core.baseline import Baseline
from pytest_ilp.core.diagnosis import Diagnosis
from pytest_ilp.core.errors import SampleProblem
from pytest_ilp.core.gate import GateResult, GateSample, Scope, compare_with_baseline, evaluate
from pytest_ilp.core.output import RunOutput
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring import ScoringResult
from pytest_ilp.core.signals import Signals
from pytest_ilp.core.verdicts import Verdict
from pytest_ilp.report.build import SampleOutcome, build_report, relative
from pytest_ilp.report.export import remediation_records


@dataclass(kw_only=True)
class Results:
    """The verdicts, signals and diagnoses of one run's samples, and the gate's decisions."""

    settings: Settings
    rootpath: Path
    samples: dict[str, Sample] = field(default_factory=dict)
    result: ScoringResult | None = None
    #: every scoring pass of the run: the checkpoint under test, then history, then base.
    passes: list[ScoringResult] = field(default_factory=list)
    signals: dict[str, Signals] = field(default_factory=dict)
    diagnoses: dict[str, Diagnosis] = field(default_factory=dict)
    #: samples in scope (a pytest run: of the selected items, in item order), with their
    #: must-learn flag.
    in_scope: dict[str, bool] = field(default_factory=dict)
    baseline: Baseline | None = None
    #: the gate's decisions, once scoring and diagnosis are done.
    gate: GateResult | None = None
    #: samples outside the selection known from the cache: id -> (verdict, must-learn).
    outside: dict[str, tuple[Verdict, bool]] = field(default_factory=dict)
    #: what could not be read (a data file's node id -> the error's last line): the report
    #: names it and the gate cannot pass without its samples.
    collection_errors: dict[str, str] = field(default_factory=dict)

    def outcome(self, sample: Sample) -> SampleOutcome:
        """The verdict of a sample; raises `SampleProblem` when it could not be scored."""
        if sample.problem is not None:
            raise SampleProblem(sample.problem)
        if self.result is None and self.collection_errors:
            # pytest-xdist runs the items it collected even after collection errors.
            raise SampleProblem(
                "not scored: this run has collection errors (see them above); fix them, or "
                "pass --continue-on-collection-errors to check the samples that did load"
            )
        if self.result is None:
            raise RuntimeError("pytest-ilp: samples are scored before the first test runs")
        problem = self.result.problems.get(sample.id)
        if problem is not None:
            raise SampleProblem(problem)
        verdict = self.result.verdicts.get(sample.id)
        if verdict is None or self.samples.get(sample.id) != sample:
            raise SampleProblem(
                "it was not scored in this run: pass assert_learned the `ilp_sample` of a test "
                "that pytest-ilp parametrizes (or its `ilp_verdict`), not a sample read apart"
            )
        return SampleOutcome(
            sample,
            must_learn=self.in_scope.get(sample.id, sample.must_learn),
            verdict=verdict,
            diagnosis=self.diagnoses.get(sample.id),
            baseline=self._compared(sample.id, verdict.learned),
        )

    def outcomes(self) -> list[SampleOutcome]:
        """Every sample in scope, in scope order."""
        assert self.result is not None
        outcomes = []
        for sample_id, must_learn in self.in_scope.items():
            verdict = self.result.verdicts.get(sample_id)
            outcomes.append(
                SampleOutcome(
                    self.samples[sample_id],
                    must_learn=must_learn,
                    verdict=verdict,
                    problem=self.result.problems.get(sample_id),
                    diagnosis=self.diagnoses.get(sample_id),
                    signals=self.signals.get(sample_id),
                    baseline=self._compared(sample_id, verdict.learned if verdict else None),
                )
            )
        return outcomes

    def _compared(self, sample_id: str, learned: bool | None) -> str | None:
        if self.baseline is None or sample_id not in self.baseline.learned:
            return None
        return compare_with_baseline(learned, self.baseline.learned[sample_id])

    def apply_gate(
        self,
        scopes: Mapping[str, tuple[Mapping[str, Any], Sequence[str]]],
        outside: Mapping[str, Sequence[str]] | None = None,
    ) -> GateResult:
        """Decide every sample in scope: `scopes` maps each scope key to its budgets and the ids
        of its samples (see `gate.evaluate`); `outside` maps a scope key to the ids of its
        deselected samples, which count towards its budgets when the cache knew them."""
        samples = {
            o.sample.id: GateSample(
                id=o.sample.id,
                learned=o.verdict.learned if o.verdict is not None else None,
                cause=o.cause,
                must_learn=o.must_learn,
                baseline=o.baseline,
            )
            for o in self.outcomes()
        }
        others: dict[str, GateSample] = {}
        for sample_id, (verdict, must_learn) in self.outside.items():
            diagnosis = self.diagnoses.get(sample_id)
            others[sample_id] = GateSample(
                id=sample_id,
                learned=verdict.learned,
                cause=diagnosis.cause if diagnosis is not None else None,
                must_learn=must_learn,
                baseline=self._compared(sample_id, verdict.learned),
            )
        gate = evaluate(
            samples,
            [
                Scope(
                    key,
                    budgets,
                    tuple(ids),
                    tuple(others[i] for i in (outside or {}).get(key, ()) if i in others),
                )
                for key, (budgets, ids) in scopes.items()
            ],
            strict=self.settings.strict,
            baseline=None if self.baseline is None else relative(self.baseline.path, self.rootpath),
        )
        self.gate = replace(gate, unread=tuple(self.collection_errors))
        return self.gate

    def output(self) -> RunOutput:
        """What this run produced, as plain data (what an xdist worker sends its controller)."""
        assert self.result is not None
        outcomes = self.outcomes()
        settings = self.settings
        report = build_report(
            outcomes,
            checkpoint=settings.checkpoint,
            backend=self.result.backend,
            fragile_margin=settings.fragile_margin,
            root=self.rootpath,
            gate=self.gate,
            shard=str(settings.shard) if settings.shard is not None else None,
            collection_errors=self.collection_errors,
        )
        return RunOutput(
            report=report,
            export=remediation_records(outcomes, self.gate, self.rootpath)
            if settings.export is not None
            else [],
            computed=self.result.computed,
            cached=self.result.cached,
            seconds=self.result.seconds,
            diagnosis_passes=[
                {
                    "checkpoint": result.checkpoint.name,
                    "computed": result.computed,
                    "cached": result.cached,
                    "seconds": result.seconds,
                }
                for result in self.passes[1:]
            ],
        )
