"""A run's `Report`, built from its outcomes: each sample's verdict, diagnosis and signals, and
the gate's decisions.

The pipeline (a pytest run, `pytest_ilp.check`) and the trainer callback build their reports
here; `model` writes and parses them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pytest_ilp.core.diagnosis import Diagnosis
from pytest_ilp.core.gate import GateResult
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.signals import Signals
from pytest_ilp.core.verdicts import Verdict
from pytest_ilp.report.model import CollectionError, Report
from pytest_ilp.report.records import (
    DivergenceRecord,
    SampleGate,
    SampleRecord,
    UnlearnedDetail,
    json_safe,
)


@dataclass(frozen=True)
class SampleOutcome:
    """One sample in scope: its verdict, or the problem that kept it from being scored, and
    for an unlearned sample its diagnosis and the signals behind it."""

    sample: Sample
    must_learn: bool
    verdict: Verdict | None = None
    problem: str | None = None
    diagnosis: Diagnosis | None = None
    signals: Signals | None = None
    #: against the baseline report: "known", "regression", "fixed" or None.
    baseline: str | None = None

    @property
    def cause(self) -> str | None:
        return self.diagnosis.cause if self.diagnosis is not None else None

    @property
    def unlearned(self) -> bool:
        return self.verdict is not None and not self.verdict.learned


def build_report(
    outcomes: Sequence[SampleOutcome],
    checkpoint: Path,
    backend: str,
    fragile_margin: float,
    root: Path,
    gate: GateResult | None = None,
    shard: str | None = None,
    collection_errors: Mapping[str, str] | None = None,
) -> Report:
    """The `--ilp-report` document of a run (schema 2, documented in docs/json-report.md).

    `collection_errors` (node id -> message): what failed to collect under
    --continue-on-collection-errors, so a report never hides a data file it could not read.
    """
    return Report(
        checkpoint=str(checkpoint),
        backend=backend,
        fragile_margin=fragile_margin,
        samples=tuple(sample_record(o, fragile_margin, root, gate) for o in outcomes),
        shard=shard,
        collection_errors=tuple(
            CollectionError(node, error) for node, error in (collection_errors or {}).items()
        ),
        gate=gate,
    )


def sample_record(
    outcome: SampleOutcome, fragile_margin: float, root: Path, gate: GateResult | None
) -> SampleRecord:
    """One sample's record: its verdict's figures; for an unlearned sample what a person
    reads to act on it, the diagnosis and its signals; the gate's decision."""
    sample, verdict, diagnosis = outcome.sample, outcome.verdict, outcome.diagnosis
    record = SampleRecord(
        id=sample.id,
        learned=verdict.learned if verdict else None,
        source=location(sample, root),
        stage=sample.stage,
        tags=tuple(sample.tags),
        must_learn=outcome.must_learn,
        criterion=verdict.criterion if verdict else None,
        criterion_figures=json_safe(dict(verdict.figures)) if verdict else None,
        error=outcome.problem,
        signals=signals_record(outcome.signals) if outcome.signals is not None else None,
        gate=None if gate is None else _sample_gate(outcome, gate),
    )
    if verdict is not None:
        divergence = verdict.first_divergence
        record = replace(
            record,
            token_accuracy=verdict.token_accuracy,
            target_tokens=verdict.target_tokens,
            first_divergence=DivergenceRecord.of(divergence) if divergence else None,
            nll=verdict.nll,
            margin=verdict.margin if math.isfinite(verdict.margin) else None,
            fragile=verdict.is_fragile(fragile_margin),
            retokenized=verdict.retokenized,
            produced=verdict.produced,
            detail=None if verdict.learned else unlearned_detail(sample, verdict),
        )
    if diagnosis is not None:
        record = replace(
            record,
            cause=diagnosis.cause,
            causes=tuple(diagnosis.causes or (diagnosis.cause,)),
            evidence=diagnosis.evidence,
            suggestion=diagnosis.suggestion,
            confidence=diagnosis.confidence,
            figures=dict(diagnosis.figures),
        )
    return record


def _sample_gate(outcome: SampleOutcome, gate: GateResult) -> SampleGate:
    decision = gate.decision(outcome.sample.id)
    return SampleGate(
        outcome=decision.outcome,
        reason=decision.reason or None,
        scopes=tuple(gate.scopes_of(outcome.sample.id)),
        baseline=outcome.baseline,
    )


def unlearned_detail(sample: Sample, verdict: Verdict) -> UnlearnedDetail:
    """The prompt (text, or the chat turns before the target), the target, and each target
    token with the probability the model gave it (the HTML page shades them)."""
    tokens = None
    if verdict.target_pieces and len(verdict.target_pieces) == len(verdict.target_probs):
        tokens = tuple(
            (piece, round(prob, 4))
            for piece, prob in zip(verdict.target_pieces, verdict.target_probs)
        )
    return UnlearnedDetail(
        prompt=sample.prompt,
        messages=None if sample.messages is None else tuple(dict(m) for m in sample.messages),
        target=sample.target,
        target_token_probs=tokens,
    )


def signals_record(signals: Signals) -> dict[str, Any]:
    """The figures behind a diagnosis, so causes can be recomputed offline."""
    data = asdict(signals)
    data["missing"] = dict(signals.missing or {})
    safe: dict[str, Any] = json_safe(data)
    return safe


def relative(path: Path, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive on Windows
        return str(path)


def location(sample: Sample, root: Path) -> str:
    return sample.location.replace(str(sample.source), relative(sample.source, root), 1)
