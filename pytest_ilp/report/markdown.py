"""The Markdown summary of a run: for `$GITHUB_STEP_SUMMARY` and `--ilp-markdown PATH`.

Built from a `Report` (its summary and the gate it carries), so a pytest run, an xdist
controller and `python -m pytest_ilp merge` write the same summary for the same samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_ilp.core.gate import FAILED, INVALID, TOLERATED, Row, verdict_line
from pytest_ilp.report.model import Report
from pytest_ilp.report.records import SampleRecord

#: the environment variable GitHub Actions sets to the step summary file (appended to).
STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


def append_step_summary(text: str, environ: Mapping[str, str]) -> Path | None:
    """Append the summary to the step summary file when `$GITHUB_STEP_SUMMARY` names one (GitHub
    Actions shows the steps' summaries one after another); returns that file, or None."""
    path = environ.get(STEP_SUMMARY)
    if not path:
        return None
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return Path(path)


#: unlearned samples listed in the table of the summary.
TOP_SAMPLES = 10
#: sample ids listed inline before "and N more".
LISTED_IDS = 20
#: characters of a produced text shown in a table cell.
CELL_CHARS = 80


def markdown_summary(report: Report, checkpoint: str) -> str:
    """The whole summary, ending in a newline."""
    summary, gate = report.summary, report.gate
    passed = gate is None or gate.passed
    lines = [f"### pytest-ilp: {'✅ PASSED' if passed else '❌ FAILED'}", ""]
    if gate is not None:
        lines += [f"`{verdict_line(gate)}`", ""]
    figures = [
        f"checkpoint `{checkpoint}` ({report.backend})",
        f"{summary.samples} samples",
        f"{summary.learned} learned",
        f"{summary.unlearned} unlearned",
    ]
    if summary.invalid:
        figures.append(f"{len(summary.invalid)} invalid")
    if summary.criteria:
        figures.append(
            "judged by "
            + ", ".join(
                f"`{spec}`" + (f" ({count})" if len(summary.criteria) > 1 else "")
                for spec, count in summary.criteria.items()
            )
        )
    if report.shard:
        figures.append(f"shard {report.shard}")
    lines += [" · ".join(figures), ""]
    if gate is not None:
        headed = len(gate.scopes) > 1 or any(r.scope.key for r in gate.scopes)
        for result in gate.scopes:
            if not gate.unlearned and not result.scope.budgets:
                continue
            if headed:
                lines += [f"Budgets of {_code(result.scope.label)}:", ""]
            lines += [*_cause_table(result.rows, gate.baseline is not None), ""]
        lines += _listed("Must-learn samples not learned", gate.must_learn_unlearned)
        if gate.baseline is not None:
            lines += _listed(f"Regressions against `{gate.baseline}`", gate.regressions)
            lines += _listed("Fixed", gate.fixed)
            lines += _listed("Known failures, unlearned in the baseline too", gate.known)
    lines += _top_unlearned(report.samples)
    return "\n".join(lines).rstrip("\n") + "\n"


def _cause_table(rows: Sequence[Row], with_known: bool) -> list[str]:
    headers = ["cause", "unlearned", "share", "budget", "status"]
    align = [":--", "--:", "--:", ":--", ":--"]
    if with_known:
        headers.insert(2, "known")
        align.insert(2, "--:")
    body = []
    for row in rows:
        status = {"over": "❌ over", "within": "✅ within"}.get(row.status, row.status)
        cells = [row.name, str(row.count), f"{row.share:.1%}", row.budget_text, status]
        if with_known:
            cells.insert(2, str(row.known))
        body.append(cells)
    return _table(headers, align, body)


def _listed(title: str, ids: Sequence[str]) -> list[str]:
    if not ids:
        return []
    shown = ", ".join(_code(i) for i in ids[:LISTED_IDS])
    more = f" and {len(ids) - LISTED_IDS} more" if len(ids) > LISTED_IDS else ""
    return [f"**{title} ({len(ids)}):** {shown}{more}", ""]


_ORDER = {INVALID: 0, FAILED: 1, TOLERATED: 2}


def _top_unlearned(records: Sequence[SampleRecord]) -> list[str]:
    """The failing samples first, then the tolerated ones; the least learned (highest NLL)
    first within each."""
    unlearned = [r for r in records if r.unlearned]
    if not unlearned:
        return []
    unlearned.sort(key=lambda r: (_ORDER.get(_outcome(r) or FAILED, 3), -(r.nll or 0)))
    body = []
    for record in unlearned[:TOP_SAMPLES]:
        divergence = record.first_divergence
        diverged = (
            f"token {divergence.position + 1}: expected {_quote(divergence.expected)}, "
            f"got {_quote(divergence.predicted)}"
            if divergence
            else ""
        )
        tag = " (must-learn)" if record.must_learn else ""
        body.append(
            [
                _code(record.id) + tag,
                record.source,
                record.cause or "",
                _outcome(record) or "",
                _code(record.criterion or "exact"),
                diverged,
                _quote(record.produced or ""),
            ]
        )
    title = f"Top unlearned samples ({min(len(unlearned), TOP_SAMPLES)} of {len(unlearned)})"
    headers = ["sample", "source", "cause", "gate", "criterion", "diverged at", "produced"]
    return [
        f"<details><summary>{title}</summary>",
        "",
        *_table(headers, [":--"] * len(headers), body),
        "",
        "</details>",
    ]


def _outcome(record: SampleRecord) -> str | None:
    return record.gate.outcome if record.gate is not None else None


def _table(
    headers: Sequence[str], align: Sequence[str], body: Sequence[Sequence[str]]
) -> list[str]:
    rows = [headers, align, *body]
    return ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else text


def _quote(text: str) -> str:
    if len(text) > CELL_CHARS:
        text = text[: CELL_CHARS - 1] + "…"
    return _code(text) if text.strip() else repr(text)
