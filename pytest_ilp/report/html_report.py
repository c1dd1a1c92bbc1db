"""The HTML report: one self-contained page, built from a `Report`.

`--ilp-html=PATH` and `python -m pytest_ilp html report.json -o report.html` both call
`html_page` on the same report, so they write the same page. The page needs nothing from
the network: its style and script are inline, its charts are inline SVG (`html_charts`), and
the sample records are embedded once, as JSON, from which a small script draws the table one
page of rows at a time (so 100,000 samples cost one `JSON.parse`, not 100,000 table rows). The
first page of records is embedded apart, before the script and the bulk: the first screen is
drawn before the browser has read the rest.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.core.causes import CAUSES
from pytest_ilp.core.gate import FAILED, INVALID, PASSED, TOLERATED, GateResult, Row, verdict_line
from pytest_ilp.report.html_charts import NO_STAGE, NO_TAG, charts, histograms
from pytest_ilp.report.model import Report
from pytest_ilp.report.records import SampleRecord, json_text

#: rows of the sample table per page.
PAGE_ROWS = 50
#: fields of a sample record the page does not use (the figures behind `evidence`).
LEFT_OUT = ("signals", "figures", "gate_scopes")
#: the gate outcomes, in the order the page lists them.
OUTCOMES = (PASSED, TOLERATED, FAILED, INVALID)


def html_page(report: Report, title: str = "pytest-ilp report") -> str:
    """The whole page for a report (a run's, or one read back: `check.read_report`)."""
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["pct"] = lambda value: f"{value:.1%}"
    folder = resources.files("pytest_ilp.report") / "templates"
    template = env.from_string(folder.joinpath("report.html.j2").read_text(encoding="utf-8"))
    records, summary, gate = report.samples, report.summary, report.gate
    shown = [_page_record(r.to_dict()) for r in records]
    return template.render(
        title=title,
        report=report,
        summary=summary,
        gate=gate,
        verdict=verdict_line(gate) if gate is not None else "",
        scopes=_scopes(gate),
        charts=charts(records, gate, summary.samples),
        histograms=histograms(records, float(report.fragile_margin)),
        baseline=_baseline(gate),
        filters=_filter_options(records),
        style=folder.joinpath("report.css").read_text(encoding="utf-8"),
        script=folder.joinpath("report.js").read_text(encoding="utf-8"),
        first=embedded_json({"page": PAGE_ROWS, "total": len(shown), "samples": shown[:PAGE_ROWS]}),
        data=embedded_json({"samples": shown}),
    )


def write_html(path: Path, report: Report) -> None:
    """Write the page atomically: a reader (a CI artifact upload) never sees half a page."""
    write_text_atomic(path, html_page(report))


def embedded_json(data: Any) -> str:
    """JSON that is safe inside `<script type="application/json">`: no `</script>` or `<!--`
    can end the element early, whatever a sample's text holds."""
    text = json_text(data, indent=None)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# -- what the page shows -----------------------------------------------------------------------


def _page_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A sample record as the page's script reads it: without the fields the page does not
    show, without nulls, empty lists and false flags (the script reads a missing field as
    false), numbers to 4 significant digits."""
    return {
        key: _compact(value)
        for key, value in record.items()
        if key not in LEFT_OUT
        and value is not None
        and value != []
        and value != {}
        and (value is not False or key == "learned")
    }


def _compact(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _scopes(gate: GateResult | None) -> list[tuple[str, int, list[Row]]]:
    if gate is None:
        return []
    return [
        (result.scope.label, len(result.scope.sample_ids), list(result.rows))
        for result in gate.scopes
        if gate.unlearned or result.scope.budgets
    ]


def _baseline(gate: GateResult | None) -> dict[str, Any] | None:
    if gate is None or gate.baseline is None:
        return None
    return {
        "path": gate.baseline,
        "regressions": list(gate.regressions),
        "fixed": list(gate.fixed),
        "known": list(gate.known),
    }


def _filter_options(records: Sequence[SampleRecord]) -> dict[str, list[str]]:
    causes = Counter(r.cause for r in records if r.cause)
    gates = [r.gate for r in records if r.gate is not None]
    return {
        "cause": [c for c in CAUSES if c in causes] + sorted(c for c in causes if c not in CAUSES),
        "stage": sorted({r.stage or NO_STAGE for r in records}),
        "tag": sorted({t for r in records for t in (r.tags or [NO_TAG])}),
        "baseline": sorted({g.baseline for g in gates if g.baseline}),
        "outcome": [o for o in OUTCOMES if any(g.outcome == o for g in gates)],
    }
