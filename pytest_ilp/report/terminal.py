"""The terminal's view of a run: the pytest-ilp summary section and the closing block.

Pure functions of a `Summary` and a `GateResult` (a run's own, an xdist controller's, a merge's):
the plugin, `python -m pytest_ilp merge` and the trainer callback print what they return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from pytest_ilp.core.gate import FAILED, TOLERATED, GateResult, Row, verdict_line
from pytest_ilp.report.model import Summary

#: sample ids listed per line of the summary before "+N more".
LISTED_IDS = 10


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
