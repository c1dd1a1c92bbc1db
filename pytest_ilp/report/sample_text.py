"""One sample as a person and a JUnit file see it: the failure text that replaces a
traceback, the line of a sample that cannot be checked, and the item's `user_properties`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pytest_ilp.core.criteria import parse_criterion
from pytest_ilp.core.gate import Decision, Row
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.verdicts import Verdict
from pytest_ilp.report.build import SampleOutcome, location

#: characters of a prompt or target shown in a failure report before the middle is elided.
SHOWN_CHARS = 300
#: a `\\xNN` byte escape in a text, as json.dumps writes it (the backslash doubled).
_DOUBLED_BYTE_ESCAPE = re.compile(r"\\\\x([0-9a-f]{2})")


def failure_text(outcome: SampleOutcome, root: Path, decision: Decision | None = None) -> str:
    """What a person needs to act on an unlearned sample: no traceback, just the evidence, and
    why the gate fails it."""
    sample, verdict = outcome.sample, outcome.verdict
    assert verdict is not None
    divergence = verdict.first_divergence
    tag = " [must-learn]" if outcome.must_learn else ""
    ending = " + EOS" if verdict.produced_stopped else " (no EOS within the generation budget)"
    lines = [
        f"sample {sample.id} ({location(sample, root)}) was not learned{tag}",
        f"  criterion: {criterion_text(verdict)}",
        f"  prompt:    {prompt_text(sample)}",
        f"  expected:  {_quote(sample.target)} + EOS",
    ]
    if divergence is None:
        lines.append("  produced:  the target itself (greedy decoding reproduces it)")
    else:
        lines += [
            f"  produced:  {_quote(verdict.produced or '')}{ending}"
            if verdict.produced is not None
            else "  produced:  (not generated)",
            f"  diverged at target token {divergence.position + 1} of {verdict.target_tokens}: "
            f"expected {_quote(divergence.expected, 40)} (p={divergence.expected_prob:.3f}), "
            f"predicted {_quote(divergence.predicted, 40)} (p={divergence.predicted_prob:.3f})",
        ]
    lines.append(
        f"  token accuracy {verdict.token_accuracy:.2f} ({verdict.matched}/{verdict.target_tokens})"
        f"   mean NLL {verdict.nll:.3f} nats/token   margin {verdict.margin:+.3f} nats"
    )
    diagnosis = outcome.diagnosis
    if diagnosis is not None:
        confidence = f" ({diagnosis.confidence})" if diagnosis.confidence else ""
        lines.append(f"  cause:     {diagnosis.cause}{confidence}: {diagnosis.evidence}")
        others = [c for c in diagnosis.causes if c != diagnosis.cause]
        if others:
            lines.append(f"  also:      {', '.join(others)}")
        lines.append(f"  fix:       {diagnosis.suggestion}")
    if decision is not None and decision.reason:
        lines.append(f"  gate:      {decision.reason}")
    if verdict.note:
        lines.append(f"  note: {verdict.note}")
    return "\n".join(lines)


def criterion_text(verdict: Verdict) -> str:
    """The criterion that judged the sample and what it measured, in one line."""
    criterion = parse_criterion(verdict.criterion)
    figures = verdict.figures
    name = criterion.name
    if name == "exact":
        return "exact (greedy decoding must reproduce the target, then EOS)"
    if name == "prefix":
        return f"{criterion.label}: {figures.get('reproduced_tokens')} reproduced"
    if name == "token_accuracy":
        return f"{criterion.label}: {verdict.token_accuracy:.3f}"
    if name == "nll":
        return f"{criterion.label}: {verdict.nll:.3f}"
    if name == "normalized":
        return (
            f"normalized: output {_quote(str(figures.get('normalized_output')), 80)} vs target "
            f"{_quote(str(figures.get('normalized_target')), 80)}"
        )
    if name == "choice":
        options = figures.get("options") or []
        if len(options) < 2:
            return criterion.label
        best = int(figures.get("best_distractor", 0)) + 1
        per = "/token" if criterion.score == "mean" else ""
        return (
            f"{criterion.label}: target {options[0]['score']:.3f}{per} vs distractor {best} "
            f"{_quote(options[best]['text'], 60)} {options[best]['score']:.3f}{per}"
        )
    return (
        f"{criterion.label}: {figures.get('passes')} of {figures.get('n')} completions reproduce "
        f"it (pass rate {figures.get('pass_rate', 0):.2f}, sample seed {figures.get('seed')})"
    )


def problem_text(sample: Sample, problem: str, root: Path) -> str:
    return f"sample {sample.id} ({location(sample, root)}) cannot be checked: {problem}"


def prompt_text(sample: Sample) -> str:
    if sample.messages is None:
        return _quote(sample.prompt or "")
    last = sample.messages[-1]
    earlier = len(sample.messages) - 1
    before = f" (after {earlier} earlier turn{'s' if earlier != 1 else ''})" if earlier else ""
    return f"{last['role']}: {_quote(str(last['content']))}{before}"


def _quote(text: str, limit: int = SHOWN_CHARS) -> str:
    """The text in double quotes, escaped as in JSON, except that the bytes of an incomplete
    character (see `pytest_ilp.core.decoding`) read `\\xe2\\x82`, as written, not `\\\\xe2`."""
    if len(text) > limit:
        keep = limit // 2
        text = f"{text[:keep]} … {text[-keep:]}"
    return _DOUBLED_BYTE_ESCAPE.sub(r"\\x\1", json.dumps(text, ensure_ascii=False))


def item_properties(
    outcome: SampleOutcome, decision: Decision | None = None, row: Row | None = None
) -> list[tuple[str, object]]:
    """Per-item figures for `user_properties`, so JUnit XML (and xdist) carry them: the verdict,
    the diagnosis, the gate's decision and the figures of the cause's budget."""
    properties: list[tuple[str, object]] = [
        ("ilp_sample_id", outcome.sample.id),
        ("ilp_must_learn", outcome.must_learn),
    ]
    verdict = outcome.verdict
    if verdict is None:
        return properties
    properties += [
        ("ilp_learned", verdict.learned),
        ("ilp_criterion", verdict.criterion),
        *(
            (f"ilp_criterion_{name}", round(value, 4) if isinstance(value, float) else value)
            for name, value in verdict.figures.items()
            if isinstance(value, (int, float, str, bool))
        ),
        ("ilp_token_accuracy", round(verdict.token_accuracy, 4)),
        ("ilp_nll", round(verdict.nll, 4)),
        ("ilp_margin", round(verdict.margin, 4)),
    ]
    if verdict.first_divergence is not None:
        properties.append(("ilp_first_divergence", verdict.first_divergence.position))
    if outcome.diagnosis is not None:
        properties += [
            ("ilp_cause", outcome.diagnosis.cause),
            ("ilp_causes", ",".join(outcome.diagnosis.causes)),
            ("ilp_evidence", outcome.diagnosis.evidence),
            ("ilp_suggestion", outcome.diagnosis.suggestion),
        ]
        if outcome.diagnosis.confidence is not None:
            properties.append(("ilp_confidence", outcome.diagnosis.confidence))
    if decision is not None:
        properties.append(("ilp_gate", decision.outcome))
        if decision.reason:
            properties.append(("ilp_gate_reason", decision.reason))
    if row is not None and not verdict.learned:
        properties += [
            ("ilp_cause_unlearned", row.count),
            ("ilp_cause_share", round(row.share, 4)),
            ("ilp_cause_budget", row.budget_text),
        ]
    if outcome.baseline is not None:
        properties.append(("ilp_baseline", outcome.baseline))
    return properties
