"""Everything pytest-ilp shows a person or a CI system, built by pure functions.

The failure text of one sample, the terminal summary, the JUnit properties of an item and the
JSON report all come from here; the plugin only writes out what these functions return.

The JSON report is also what travels between processes: an xdist worker sends it to the
controller, and `python -m pytest_ilp merge` reads shard reports. So the terminal summary is
always built from a report (`summary_of`, `gate_of`), whichever process prints it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from pytest_ilp.core.causes import CAUSES
from pytest_ilp.core.criteria import parse_criterion
from pytest_ilp.core.diagnosis import WEAK, Diagnosis
from pytest_ilp.core.gate import (
    FAILED,
    TOLERATED,
    Decision,
    GateResult,
    GateSample,
    Row,
    Scope,
    evaluate,
    verdict_line,
)
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.signals import Signals
from pytest_ilp.core.thresholds import Threshold
from pytest_ilp.core.verdicts import Divergence, Verdict
from pytest_ilp.report.check import REPORT_SCHEMA

#: characters of a prompt or target shown in a failure report before the middle is elided.
SHOWN_CHARS = 300
#: a `\\xNN` byte escape in a text, as json.dumps writes it (the backslash doubled).
_DOUBLED_BYTE_ESCAPE = re.compile(r"\\\\x([0-9a-f]{2})")
#: sample ids listed per line of the summary before "+N more".
LISTED_IDS = 10


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


@dataclass(frozen=True)
class Summary:
    samples: int
    learned: int
    unlearned: int
    must_learn: int
    must_learn_unlearned: tuple[str, ...]
    fragile: tuple[str, ...]
    invalid: tuple[str, ...]
    #: unlearned samples per diagnosed cause (empty when nothing was diagnosed).
    causes: Mapping[str, int] = field(default_factory=dict)
    #: samples per criterion (its spec), the default `exact` included.
    criteria: Mapping[str, int] = field(default_factory=dict)
    #: of those, the ones whose cause is only a weak guess (see `Diagnosis.confidence`).
    weak_causes: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        return cls(
            samples=data["samples"],
            learned=data["learned"],
            unlearned=data["unlearned"],
            must_learn=data["must_learn"],
            must_learn_unlearned=tuple(data["must_learn_unlearned"]),
            fragile=tuple(data["fragile"]),
            invalid=tuple(data["invalid"]),
            causes=dict(data.get("causes") or {}),
            criteria=dict(data.get("criteria") or {}),
            weak_causes=dict(data.get("weak_causes") or {}),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "learned": self.learned,
            "unlearned": self.unlearned,
            "learned_share": self.learned / self.samples if self.samples else None,
            "must_learn": self.must_learn,
            "must_learn_unlearned": list(self.must_learn_unlearned),
            "fragile": list(self.fragile),
            "invalid": list(self.invalid),
            "causes": dict(self.causes),
            "criteria": dict(self.criteria),
            "weak_causes": dict(self.weak_causes),
        }


def summarize(records: Sequence[Mapping[str, Any]]) -> Summary:
    """The report's `summary`, from its sample records: the one place it is computed, for a run's
    report, a trainer callback's and a merge of shard reports alike."""
    unlearned = [r for r in records if r["learned"] is False]
    causes = Counter(r["cause"] for r in unlearned if r.get("cause") is not None)
    weak = Counter(
        r["cause"] for r in unlearned if r.get("cause") is not None and r.get("confidence") == WEAK
    )
    order = [c for c in CAUSES if c in causes] + sorted(c for c in causes if c not in CAUSES)
    return Summary(
        samples=len(records),
        learned=sum(1 for r in records if r["learned"] is True),
        unlearned=len(unlearned),
        must_learn=sum(1 for r in records if r.get("must_learn")),
        must_learn_unlearned=tuple(r["id"] for r in unlearned if r.get("must_learn")),
        fragile=tuple(r["id"] for r in records if r.get("fragile")),
        invalid=tuple(r["id"] for r in records if r.get("error") is not None),
        causes={cause: causes[cause] for cause in order},
        # A schema-1 report's records predate criteria: they were judged exact.
        criteria=dict(
            Counter(r.get("criterion") or "exact" for r in records if r.get("learned") is not None)
        ),
        weak_causes={cause: weak[cause] for cause in order if cause in weak},
    )


def relative(path: Path, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive on Windows
        return str(path)


def location(sample: Sample, root: Path) -> str:
    return sample.location.replace(str(sample.source), relative(sample.source, root), 1)


# -- terminal ----------------------------------------------------------------------------------


def summary_lines(
    summary: Summary,
    checkpoint: str,
    backend: str,
    timing: str,
    fragile_margin: float,
    gate: GateResult | None = None,
    exitstatus: int = 0,
) -> list[str]:
    """The pytest-ilp section of the terminal summary; with a gate, it ends in its verdict
    line, which says where a non-zero exit status comes from when the gate passed."""
    table = tabulate(
        [
            [
                summary.samples,
                summary.learned,
                summary.unlearned,
                f"{len(summary.must_learn_unlearned)} of {summary.must_learn}",
                len(summary.fragile),
                len(summary.invalid),
            ]
        ],
        headers=["samples", "learned", "unlearned", "must-learn unlearned", "fragile", "invalid"],
        tablefmt="simple",
    )
    lines = [f"checkpoint {checkpoint} ({backend})", *table.splitlines()]
    if summary.criteria and set(summary.criteria) != {"exact"}:
        lines.append(criteria_line(summary.criteria))
    if gate is not None:
        lines += gate_lines(gate)
    elif summary.causes:
        rows = [
            [cause, count, f"{count / summary.samples:.1%}"]
            for cause, count in summary.causes.items()
        ]
        lines += ["", *tabulate(rows, headers=["cause", "unlearned", "share"]).splitlines(), ""]
    if summary.weak_causes:
        lines.append(
            "weak guesses among the causes (thin evidence): "
            + ", ".join(f"{cause} {count}" for cause, count in summary.weak_causes.items())
        )
    if summary.must_learn_unlearned:
        lines.append("must-learn samples not learned: " + _ids(summary.must_learn_unlearned))
    if summary.fragile:
        lines.append(
            f"fragile (learned, margin < {fragile_margin:g} nats): " + _ids(summary.fragile)
        )
    if summary.invalid:
        lines.append("invalid samples (see their errors): " + _ids(summary.invalid))
    lines.append(timing)
    if gate is not None:
        verdict = verdict_line(gate)
        if gate.passed and exitstatus:
            verdict += f" (exit status {exitstatus} comes from outside the gate)"
        lines.append(verdict)
    return lines


@dataclass(frozen=True)
class ConfiguredOutputs:
    """Which outputs the run was configured to write (the closing block suggests the others)."""

    report: bool = False
    export: bool = False
    baseline: bool = False


def closing_lines(
    gate: GateResult,
    written: Sequence[tuple[str, str]],
    command: str,
    configured: ConfiguredOutputs,
) -> list[str]:
    """The short block a person reads last: the gate's verdict, what failed and what was
    tolerated, every file the run wrote (`written`: what, path), and the commands to try next
    (`command`: the run's own, `pytest example_project`, which they extend)."""
    lines = [verdict_line(gate)]
    failed, tolerated = gate.count(FAILED), gate.count(TOLERATED)
    outcome = []
    if failed:
        outcome.append(f"{failed} unlearned sample{_s(failed)} failed the run (reports above)")
    if tolerated:
        outcome.append(f"{tolerated} tolerated (xfailed: within budget or known)")
    if gate.invalid:
        outcome.append(f"{len(gate.invalid)} could not be checked (see their errors)")
    if outcome:
        lines.append("  " + "; ".join(outcome))
    if gate.must_learn_unlearned:
        lines.append("  must-learn samples not learned: " + _ids(gate.must_learn_unlearned))
    width = max((len(what) for what, _ in written), default=0)
    for index, (what, path) in enumerate(written):
        lines.append(f"  {'written:' if index == 0 else '':9} {what:{width}}  {path}")
    suggestions = _next_steps(gate, command, configured)
    for index, (run, why) in enumerate(suggestions):
        lines.append(f"  {'next:' if index == 0 else '':9} {run}")
        lines.append(f"  {'':9}   {why}")
    if suggestions and "…" in command:
        lines.append(f"  {'':9} (… stands for this run's arguments)")
    return lines


def _next_steps(
    gate: GateResult, command: str, configured: ConfiguredOutputs
) -> list[tuple[str, str]]:
    steps: list[tuple[str, str]] = []
    first_failed = next(
        (i for s in gate.scopes for i, d in s.decisions.items() if d.outcome == FAILED), None
    )
    if first_failed is not None:
        steps.append(
            (
                f"{command} -k {first_failed}",
                "one failing sample alone (the gate decides it the same)",
            )
        )
    if gate.passed:
        if not configured.report:
            steps.append(
                (
                    f"{command} --ilp-report=ilp-report.json",
                    "keep every sample's verdict, cause and figures",
                )
            )
        return steps
    if gate.unlearned and not configured.export:
        steps.append(
            (
                f"{command} --ilp-export=ilp-unlearned.jsonl",
                "the unlearned samples with cause and fix, to mend the data or train on",
            )
        )
    if not configured.baseline:
        steps.append(
            (
                f"{command} --ilp-baseline=ilp-baseline.json --ilp-update-baseline",
                "record today's unlearned samples; later runs with "
                "--ilp-baseline=ilp-baseline.json fail only on new ones",
            )
        )
    elif gate.regressions:
        steps.append(
            (f"{command} --ilp-update-baseline", "accept the regressions into the baseline")
        )
    return steps


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def criteria_line(criteria: Mapping[str, int]) -> str:
    """Which criteria judged the samples, e.g. "criteria: exact 40, choice:mean 10"."""
    if len(criteria) == 1:
        return f"criterion: {next(iter(criteria))}"
    return "criteria: " + ", ".join(f"{spec} {count}" for spec, count in criteria.items())


def gate_lines(gate: GateResult) -> list[str]:
    """The per-cause table of each scope (count, share, budget, status) and the baseline."""
    lines: list[str] = []
    headed = len(gate.scopes) > 1 or any(r.scope.key for r in gate.scopes)
    for result in gate.scopes:
        if not gate.unlearned and not result.scope.budgets:
            continue
        if headed:
            lines += ["", f"budgets of {result.scope.label}:"]
        lines += ["", *gate_table(result.rows, gate.baseline is not None, "simple").splitlines()]
        others = len({s.id for s in result.scope.others} - set(result.scope.sample_ids))
        if others:
            selected = len(result.scope.sample_ids)
            lines.append(
                f"(over {selected + others} samples: {selected} selected, and {others} outside "
                "the selection whose verdicts the cache holds)"
            )
    if lines:
        lines.append("")
    if gate.baseline is not None:
        lines.append(
            f"baseline {gate.baseline}: {len(gate.known)} known, "
            f"{len(gate.regressions)} regressed, {len(gate.fixed)} fixed"
        )
        for label, ids in (
            ("regressions (learned in the baseline, not now)", gate.regressions),
            ("fixed (unlearned in the baseline, learned now)", gate.fixed),
            ("known (unlearned in the baseline too, tolerated)", gate.known),
        ):
            if ids:
                lines.append(f"{label}: {_ids(ids)}")
    return lines


def gate_table(rows: Sequence[Row], with_known: bool, tablefmt: str) -> str:
    headers = ["cause", "unlearned", "share", "budget", "status"]
    if with_known:
        headers.insert(2, "known")
    body = []
    for row in rows:
        cells: list[Any] = [row.name, row.count, f"{row.share:.1%}", row.budget_text, row.status]
        if with_known:
            cells.insert(2, row.known)
        body.append(cells)
    return tabulate(body, headers=headers, tablefmt=tablefmt, colalign=_colalign(with_known))


def _colalign(with_known: bool) -> tuple[str, ...]:
    columns = ["left", "right", "right", "left", "left"]
    if with_known:
        columns.insert(2, "right")
    return tuple(columns)


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:LISTED_IDS])
    return shown + (f" (+{len(ids) - LISTED_IDS} more)" if len(ids) > LISTED_IDS else "")


def timing_line(
    computed: int,
    cached: int,
    seconds: float,
    diagnosis_passes: Sequence[Mapping[str, Any]] = (),
) -> str:
    """What scoring cost: the checkpoint under test, then each checkpoint scored for diagnosis
    (on the unlearned samples only)."""
    rate = f", {computed / seconds:.1f} samples/s" if computed and seconds > 0 else ""
    line = f"scored {computed} samples in {seconds:.1f} s{rate}; {cached} from cache"
    if diagnosis_passes:
        line += "; for diagnosis: " + ", ".join(
            f"{p['checkpoint']} {p['computed']} in {p['seconds']:.1f} s ({p['cached']} cached)"
            for p in diagnosis_passes
        )
    return line


# -- one sample --------------------------------------------------------------------------------


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


# -- JSON report -------------------------------------------------------------------------------


def json_report(
    outcomes: Sequence[SampleOutcome],
    checkpoint: Path,
    backend: str,
    fragile_margin: float,
    root: Path,
    gate: GateResult | None = None,
    shard: str | None = None,
    collection_errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The `--ilp-report` document (schema 2, documented in docs/json-report.md).

    `collection_errors` (node id -> message): what failed to collect under
    --continue-on-collection-errors, so a report never hides a data file it could not read.
    """
    samples = [_sample_record(o, fragile_margin, root, gate) for o in outcomes]
    document = {
        "schema": REPORT_SCHEMA,
        "checkpoint": str(checkpoint),
        "backend": backend,
        "fragile_margin": fragile_margin,
        "samples": samples,
        "summary": summarize(samples).as_dict(),
        "shard": shard,
        "collection_errors": [
            {"node": node, "error": error} for node, error in (collection_errors or {}).items()
        ],
    }
    if gate is not None:
        document["gate"] = gate.to_dict()
    return document


def _sample_record(
    outcome: SampleOutcome, fragile_margin: float, root: Path, gate: GateResult | None
) -> dict[str, Any]:
    sample, verdict = outcome.sample, outcome.verdict
    record: dict[str, Any] = {
        "id": sample.id,
        "source": location(sample, root),
        "stage": sample.stage,
        "tags": list(sample.tags),
        "must_learn": outcome.must_learn,
        "learned": verdict.learned if verdict else None,
        "criterion": verdict.criterion if verdict else None,
        "criterion_figures": _json_safe(dict(verdict.figures)) if verdict else None,
        "token_accuracy": None,
        "target_tokens": None,
        "first_divergence": None,
        "nll": None,
        "margin": None,
        "fragile": False,
        "retokenized": False,
        "produced": None,
        "cause": None,
        "causes": [],
        "evidence": None,
        "suggestion": None,
        "signals": None,
        "error": outcome.problem,
    }
    if verdict is not None:
        record.update(
            token_accuracy=verdict.token_accuracy,
            target_tokens=verdict.target_tokens,
            first_divergence=divergence_record(verdict.first_divergence),
            nll=verdict.nll,
            margin=_finite(verdict.margin),
            fragile=verdict.is_fragile(fragile_margin),
            retokenized=verdict.retokenized,
            produced=verdict.produced,
        )
        if not verdict.learned:
            record.update(_unlearned_detail(sample, verdict))
    if outcome.diagnosis is not None:
        record.update(outcome.diagnosis.to_dict())
    if outcome.signals is not None:
        record["signals"] = signals_record(outcome.signals)
    if gate is not None:
        decision = gate.decision(sample.id)
        record.update(
            gate=decision.outcome,
            gate_reason=decision.reason or None,
            gate_scopes=gate.scopes_of(sample.id),
            baseline=outcome.baseline,
        )
    return record


def _unlearned_detail(sample: Sample, verdict: Verdict) -> dict[str, Any]:
    """What a person reads to act on an unlearned sample (the HTML page shows it): the prompt
    (text, or the chat turns before the target), the target, and each target token with the
    probability the model gave it. Learned samples leave these out, so that a report of
    100,000 samples stays small."""
    tokens = None
    if verdict.target_pieces and len(verdict.target_pieces) == len(verdict.target_probs):
        tokens = [
            [piece, round(prob, 4)]
            for piece, prob in zip(verdict.target_pieces, verdict.target_probs)
        ]
    return {
        "prompt": sample.prompt,
        "messages": None if sample.messages is None else [dict(m) for m in sample.messages],
        "target": sample.target,
        "target_token_probs": tokens,
    }


# -- reading reports back ----------------------------------------------------------------------


def summary_of(document: Mapping[str, Any]) -> Summary:
    return Summary.from_dict(document["summary"])


def gate_of(document: Mapping[str, Any]) -> GateResult | None:
    """Evaluate the gate again from a report: its samples' verdicts, causes, must-learn flags,
    baseline comparisons and scopes, and its scopes' budgets. None for a report without a gate
    (written by a pytest-ilp without one)."""
    recorded = document.get("gate")
    if recorded is None:
        return None
    samples: dict[str, GateSample] = {}
    members: dict[str, list[str]] = {s["scope"]: [] for s in recorded["scopes"]}
    for record in document["samples"]:
        samples[record["id"]] = GateSample(
            id=record["id"],
            learned=record["learned"],
            cause=record.get("cause"),
            must_learn=bool(record.get("must_learn")),
            baseline=record.get("baseline"),
        )
        for key in record.get("gate_scopes") or []:
            members.setdefault(key, []).append(record["id"])
    scopes = [
        Scope(
            key=s["scope"],
            budgets={name: Threshold.from_dict(b) for name, b in s["budgets"].items()},
            sample_ids=tuple(members[s["scope"]]),
            others=tuple(GateSample.from_dict(o) for o in s.get("outside_selection") or ()),
        )
        for s in recorded["scopes"]
    ]
    gate = evaluate(samples, scopes, strict=bool(recorded["strict"]), baseline=recorded["baseline"])
    return replace(gate, unread=tuple(recorded.get("unread") or ()))


def signals_record(signals: Signals) -> dict[str, Any]:
    """The figures behind a diagnosis, so causes can be recomputed offline."""
    data = asdict(signals)
    data["missing"] = dict(signals.missing or {})
    safe: dict[str, Any] = _json_safe(data)
    return safe


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def json_text(document: Any, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259): a non-finite number (an NLL that overflowed in float16) is
    written as null, never as the NaN or Infinity that jq and JavaScript refuse."""
    return json.dumps(
        _json_safe(document), indent=indent, ensure_ascii=False, allow_nan=False, default=str
    )


def divergence_record(
    divergence: Divergence | None, *, probabilities: bool = True
) -> dict[str, Any] | None:
    """A first divergence as the report (and, without `probabilities`, the export) writes it."""
    if divergence is None:
        return None
    record: dict[str, Any] = {
        "position": divergence.position,
        "expected": divergence.expected,
        "predicted": divergence.predicted,
    }
    if probabilities:
        record["expected_prob"] = divergence.expected_prob
        record["predicted_prob"] = divergence.predicted_prob
    return record
