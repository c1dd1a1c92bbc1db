"""The sample records of a JSON report, typed: what `Report.samples` holds.

`SampleRecord.to_dict` writes a record with its keys in the order reports have always had
(the unlearned sample's detail, the diagnosis' confidence and figures, the gate's fields only
when there are some); `SampleRecord.from_dict` reads one back, an earlier version's included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_ilp.core.gate import GateSample
from pytest_ilp.core.verdicts import Divergence


@dataclass(frozen=True)
class DivergenceRecord:
    """Where greedy decoding first left the target (`first_divergence`)."""

    position: int
    expected: str
    predicted: str
    #: None where the probability was not finite.
    expected_prob: float | None
    predicted_prob: float | None

    @classmethod
    def of(cls, divergence: Divergence) -> DivergenceRecord:
        return cls(
            divergence.position,
            divergence.expected,
            divergence.predicted,
            divergence.expected_prob,
            divergence.predicted_prob,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DivergenceRecord:
        return cls(
            data["position"],
            data["expected"],
            data["predicted"],
            data.get("expected_prob"),
            data.get("predicted_prob"),
        )

    def to_dict(self, *, probabilities: bool = True) -> dict[str, Any]:
        """As the report writes it; without `probabilities`, as the export does."""
        record: dict[str, Any] = {
            "position": self.position,
            "expected": self.expected,
            "predicted": self.predicted,
        }
        if probabilities:
            record["expected_prob"] = self.expected_prob
            record["predicted_prob"] = self.predicted_prob
        return record


@dataclass(frozen=True)
class UnlearnedDetail:
    """What a person reads to act on an unlearned sample (learned samples leave it out, so a
    report of 100,000 samples stays small): the prompt (text) or the chat turns before the
    target, the target, and each target token with the probability the model gave it."""

    prompt: str | None
    messages: tuple[Mapping[str, Any], ...] | None
    target: str
    #: (piece, probability) per target token, EOS included; None when they were not recorded.
    target_token_probs: tuple[tuple[str, float], ...] | None


@dataclass(frozen=True)
class SampleGate:
    """The gate's word on one sample: its decision (the worst over its scopes), the scopes it
    is in, and how it compares with the baseline."""

    #: passed, tolerated, failed or invalid (None in a hand-made report that leaves it out).
    outcome: str | None
    reason: str | None
    scopes: tuple[str, ...]
    #: known, regression, fixed or None.
    baseline: str | None


@dataclass(frozen=True)
class SampleRecord:
    """One sample of the report (docs/json-report.md lists each field)."""

    id: str
    learned: bool | None
    source: str = ""
    stage: str | None = None
    tags: tuple[str, ...] = ()
    must_learn: bool = False
    criterion: str | None = None
    criterion_figures: Mapping[str, Any] | None = None
    token_accuracy: float | None = None
    target_tokens: int | None = None
    first_divergence: DivergenceRecord | None = None
    nll: float | None = None
    margin: float | None = None
    fragile: bool = False
    retokenized: bool = False
    produced: str | None = None
    cause: str | None = None
    causes: tuple[str, ...] = ()
    evidence: str | None = None
    suggestion: str | None = None
    #: every signal computed for the sample, as plain JSON data.
    signals: Mapping[str, Any] | None = None
    error: str | None = None
    detail: UnlearnedDetail | None = None
    confidence: str | None = None
    #: the figures behind the diagnosis; None: the sample was not diagnosed.
    figures: Mapping[str, Any] | None = None
    gate: SampleGate | None = None

    @property
    def unlearned(self) -> bool:
        return self.learned is False

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "stage": self.stage,
            "tags": list(self.tags),
            "must_learn": self.must_learn,
            "learned": self.learned,
            "criterion": self.criterion,
            "criterion_figures": _plain(self.criterion_figures),
            "token_accuracy": self.token_accuracy,
            "target_tokens": self.target_tokens,
            "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
            "nll": self.nll,
            "margin": self.margin,
            "fragile": self.fragile,
            "retokenized": self.retokenized,
            "produced": self.produced,
            "cause": self.cause,
            "causes": list(self.causes),
            "evidence": self.evidence,
            "suggestion": self.suggestion,
            "signals": _plain(self.signals),
            "error": self.error,
        }
        if self.detail is not None:
            probs = self.detail.target_token_probs
            record.update(
                prompt=self.detail.prompt,
                messages=None if self.detail.messages is None else _plain(self.detail.messages),
                target=self.detail.target,
                target_token_probs=None if probs is None else [list(p) for p in probs],
            )
        if self.figures is not None:
            record.update(confidence=self.confidence, figures=_plain(self.figures))
        if self.gate is not None:
            record.update(
                gate=self.gate.outcome,
                gate_reason=self.gate.reason,
                gate_scopes=list(self.gate.scopes),
                baseline=self.gate.baseline,
            )
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleRecord:
        """A record as `to_dict` writes it, or as an earlier version wrote it (schema 1, or
        fields left out: each one missing takes its default)."""
        divergence = data.get("first_divergence")
        detail = None
        if any(key in data for key in _DETAIL_KEYS):
            probs = data.get("target_token_probs")
            messages = data.get("messages")
            detail = UnlearnedDetail(
                prompt=data.get("prompt"),
                messages=None if messages is None else tuple(messages),
                target=data.get("target") or "",
                target_token_probs=None if probs is None else tuple((p, q) for p, q in probs),
            )
        gate = None
        if any(key in data for key in _GATE_KEYS):
            gate = SampleGate(
                outcome=data.get("gate"),
                reason=data.get("gate_reason"),
                scopes=tuple(data.get("gate_scopes") or ()),
                baseline=data.get("baseline"),
            )
        diagnosed = "figures" in data or "confidence" in data
        return cls(
            id=data["id"],
            learned=data["learned"],
            source=data.get("source") or "",
            stage=data.get("stage"),
            tags=tuple(data.get("tags") or ()),
            must_learn=bool(data.get("must_learn")),
            criterion=data.get("criterion"),
            criterion_figures=data.get("criterion_figures"),
            token_accuracy=data.get("token_accuracy"),
            target_tokens=data.get("target_tokens"),
            first_divergence=None if divergence is None else DivergenceRecord.from_dict(divergence),
            nll=data.get("nll"),
            margin=data.get("margin"),
            fragile=bool(data.get("fragile")),
            retokenized=bool(data.get("retokenized")),
            produced=data.get("produced"),
            cause=data.get("cause"),
            causes=tuple(data.get("causes") or ()),
            evidence=data.get("evidence"),
            suggestion=data.get("suggestion"),
            signals=data.get("signals"),
            error=data.get("error"),
            detail=detail,
            confidence=data.get("confidence"),
            figures=(data.get("figures") or {}) if diagnosed else None,
            gate=gate,
        )

    def gate_sample(self) -> GateSample:
        """What the gate needs to know about this sample (a merge evaluates it again)."""
        return GateSample(
            id=self.id,
            learned=self.learned,
            cause=self.cause,
            must_learn=self.must_learn,
            baseline=self.gate.baseline if self.gate is not None else None,
        )


_DETAIL_KEYS = ("prompt", "messages", "target", "target_token_probs")
_GATE_KEYS = ("gate", "gate_reason", "gate_scopes", "baseline")


def _plain(value: Any) -> Any:
    """Mappings and sequences as the dicts and lists JSON holds (a copy: the record is frozen)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_text(document: Any, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259): a non-finite number (an NLL that overflowed in float16) is
    written as null, never as the NaN or Infinity that jq and JavaScript refuse."""
    return json.dumps(
        json_safe(document), indent=indent, ensure_ascii=False, allow_nan=False, default=str
    )
