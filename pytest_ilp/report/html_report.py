"""The HTML report: one self-contained page, built from a JSON report.

`--ilp-html=PATH` and `python -m pytest_ilp html report.json -o report.html` both call
`html_page` on the same JSON report, so they write the same page. The page needs nothing from
the network: its style and script are inline, its charts are inline SVG drawn here, and the
sample records are embedded once, as JSON, from which a small script draws the table one page
of rows at a time (so 100,000 samples cost one `JSON.parse`, not 100,000 table rows). The first
page of records is embedded apart, before the script and the bulk: the first screen is drawn
before the browser has read the rest.

The charts are hand-drawn SVG rather than matplotlib or plotly: they are bar charts and
histograms only, a few lines of geometry each; drawn here they cost no dependency (matplotlib
would be a large install and a slow import for four bar charts), follow the page's light and
dark styles, and each bar is a link that filters the table.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.core.causes import CAUSES
from pytest_ilp.core.gate import FAILED, INVALID, PASSED, TOLERATED, GateResult, Row
from pytest_ilp.report.check import ReportError, check_report
from pytest_ilp.report.json_report import gate_of, json_text, summary_of

#: rows of the sample table per page.
PAGE_ROWS = 50
#: bins of the margin and NLL histograms.
HISTOGRAM_BINS = 30
#: stages and tags shown in their charts, the most frequent first; the rest are summed up.
CHART_GROUPS = 20
#: fields of a sample record the page does not use (the figures behind `evidence`).
LEFT_OUT = ("signals", "figures", "gate_scopes")
#: the gate outcomes, in the order the page lists them.
OUTCOMES = (PASSED, TOLERATED, FAILED, INVALID)
NO_STAGE = "(no stage)"
NO_TAG = "(no tag)"


class HtmlReportError(ValueError):
    """The document is not a JSON report the page can be built from; the message says why."""


@dataclass(frozen=True)
class Bar:
    """One row of a horizontal bar chart: stacked segments, a label, a figure, a filter."""

    label: str
    #: (CSS class, value, tooltip) of each segment, left to right.
    segments: tuple[tuple[str, float, str], ...]
    figure: str
    #: the table filter a click on the bar sets: (filter name, value).
    filter: tuple[str, str] | None = None
    #: where the budget ends, in the chart's units (None: no budget to mark).
    limit: float | None = None
    over: bool = False
    #: what the label means (a tooltip).
    hint: str = ""


@dataclass(frozen=True)
class BarChart:
    title: str
    bars: tuple[Bar, ...]
    #: the value of a full-width bar.
    scale: float
    note: str = ""
    legend: tuple[tuple[str, str], ...] = ()

    def width(self, value: float) -> float:
        """Percent of the plot width."""
        return 100.0 * value / self.scale if self.scale > 0 else 0.0


#: one stacked piece of a histogram's bin: CSS class, y and height (percent), count.
Segment = tuple[str, float, float, int]


@dataclass(frozen=True)
class Histogram:
    title: str
    unit: str
    edges: tuple[float, ...]
    #: (CSS class, label, count per bin) of each stacked series.
    series: tuple[tuple[str, str, tuple[int, ...]], ...]
    #: (x, label) of vertical marks, such as the fragile margin.
    marks: tuple[tuple[float, str], ...] = ()
    #: (from, to, label) of a shaded band, such as the fragile zone.
    band: tuple[float, float, str] | None = None
    note: str = ""
    empty: bool = False
    tallest: int = field(init=False)

    def __post_init__(self) -> None:
        totals = [sum(s[2][i] for s in self.series) for i in range(len(self.edges) - 1)]
        object.__setattr__(self, "tallest", max(totals, default=0))

    def x(self, value: float) -> float:
        """Percent of the plot width at `value`."""
        low, high = self.edges[0], self.edges[-1]
        return 100.0 * (value - low) / (high - low) if high > low else 0.0

    def stacks(self) -> list[tuple[float, float, float, float, list[Segment]]]:
        """Per bin: x and width (percent), its range, and its segments (class, y and height in
        percent, count)."""
        out = []
        for i in range(len(self.edges) - 1):
            x0, x1 = self.x(self.edges[i]), self.x(self.edges[i + 1])
            y = 100.0
            segments: list[Segment] = []
            for css, _, counts in self.series:
                height = 100.0 * counts[i] / self.tallest if self.tallest else 0.0
                y -= height
                segments.append((css, y, height, counts[i]))
            out.append((x0, x1 - x0, self.edges[i], self.edges[i + 1], segments))
        return out

    def ticks(self) -> list[tuple[float, str]]:
        low, high = self.edges[0], self.edges[-1]
        return [(self.x(v), f"{v:.3g}") for v in (low, (low + high) / 2, high)]


def html_page(report: Mapping[str, Any], title: str = "pytest-ilp report") -> str:
    """The whole page for a JSON report (as `--ilp-report` writes it, or `merge`)."""
    check_page_report(report, "the report")
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["pct"] = lambda value: f"{value:.1%}"
    folder = resources.files("pytest_ilp.report") / "templates"
    template = env.from_string(folder.joinpath("report.html.j2").read_text(encoding="utf-8"))
    records: list[Mapping[str, Any]] = report["samples"]
    summary = summary_of(report)
    gate = gate_of(report)
    shown = [_page_record(r) for r in records]
    return template.render(
        title=title,
        report=report,
        summary=summary,
        gate=gate,
        scopes=_scopes(gate),
        charts=_charts(records, gate, summary.samples),
        histograms=_histograms(records, float(report["fragile_margin"])),
        baseline=_baseline(gate),
        filters=_filter_options(records),
        style=folder.joinpath("report.css").read_text(encoding="utf-8"),
        script=folder.joinpath("report.js").read_text(encoding="utf-8"),
        first=embedded_json({"page": PAGE_ROWS, "total": len(shown), "samples": shown[:PAGE_ROWS]}),
        data=embedded_json({"samples": shown}),
    )


def write_html(path: Path, report: Mapping[str, Any]) -> None:
    """Write the page atomically: a reader (a CI artifact upload) never sees half a page."""
    write_text_atomic(path, html_page(report))


def check_page_report(document: Any, name: str) -> None:
    """Raise `HtmlReportError` unless `document` is a report with what the page reads."""
    try:
        check_report(document, needs=("samples", "summary", "fragile_margin", "backend"))
    except ReportError as exc:
        raise HtmlReportError(f"{name}: {exc}") from None


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


def _charts(
    records: Sequence[Mapping[str, Any]], gate: GateResult | None, samples: int
) -> list[BarChart]:
    charts = [_cause_chart(records, gate, samples)]
    charts.append(
        _share_chart(
            "Learned share per stage",
            "stage",
            [(r, [r.get("stage") or NO_STAGE]) for r in records],
        )
    )
    charts.append(
        _share_chart(
            "Learned share per tag", "tag", [(r, list(r.get("tags") or [NO_TAG])) for r in records]
        )
    )
    lost = _trajectory_chart(records)
    if lost is not None:
        charts.append(lost)
    return charts


def _cause_chart(
    records: Sequence[Mapping[str, Any]], gate: GateResult | None, samples: int
) -> BarChart:
    """Unlearned samples per cause, each against its budget (of the run's own scope)."""
    counts = Counter(r.get("cause") or "undiagnosed" for r in records if r.get("learned") is False)
    rows: dict[str, Row] = {}
    if gate is not None and gate.scopes:
        rows = {row.name: row for row in gate.scopes[0].rows}
    names = [c for c in CAUSES if c in counts or (c in rows and rows[c].budget is not None)]
    names += sorted(c for c in counts if c not in CAUSES)
    bars = []
    for name in names:
        count = counts.get(name, 0)
        row = rows.get(name)
        limit = None
        if row is not None and row.budget is not None:
            value = row.budget.value
            limit = value * row.samples if row.budget.is_share else float(value)
        known = row.known if row is not None else 0
        segments = [("counted", float(count - known), f"{count - known} counted")]
        if known:
            segments.append(("known", float(known), f"{known} known from the baseline"))
        figure = f"{count}" + (f" / {row.budget_text}" if row and row.budget else "")
        bars.append(
            Bar(
                label=name,
                segments=tuple(segments),
                figure=figure,
                filter=("cause", name),
                limit=limit,
                over=row is not None and not row.within,
                hint=CAUSES[name].meaning if name in CAUSES else "a cause of your own",
            )
        )
    scale = max(
        [*(sum(s[1] for s in b.segments) for b in bars), *(b.limit or 0.0 for b in bars)],
        default=1.0,
    )
    unlearned = sum(counts.values())
    return BarChart(
        title="Unlearned samples per cause, against their budgets",
        bars=tuple(bars),
        scale=max(scale, 1.0),
        note=f"{unlearned} of {samples} samples unlearned"
        + ("; the line marks each budget" if any(b.limit is not None for b in bars) else ""),
        legend=(("counted", "counted against the budget"), ("known", "known from the baseline"))
        if any(len(b.segments) > 1 for b in bars)
        else (),
    )


def _share_chart(
    title: str, name: str, grouped: Iterable[tuple[Mapping[str, Any], list[str]]]
) -> BarChart:
    """Learned, unlearned and invalid samples of each group, as shares of the group."""
    tallies: dict[str, Counter[str]] = {}
    for record, groups in grouped:
        learned = record.get("learned")
        kind = "invalid" if learned is None else "learned" if learned else "unlearned"
        for group in groups:
            tallies.setdefault(group, Counter())[kind] += 1
    ordered = sorted(tallies, key=lambda g: (-sum(tallies[g].values()), g))
    shown, rest = ordered[:CHART_GROUPS], ordered[CHART_GROUPS:]
    bars = []
    for group in shown:
        tally = tallies[group]
        total = sum(tally.values())
        segments = tuple(
            (kind, tally[kind] / total, f"{tally[kind]} {kind}")
            for kind in ("learned", "unlearned", "invalid")
            if tally[kind]
        )
        scored = tally["learned"] + tally["unlearned"]
        share = f"{tally['learned'] / scored:.0%}" if scored else "-"
        bars.append(
            Bar(
                label=group,
                segments=segments,
                figure=f"{share} of {total}",
                filter=(name, group),
            )
        )
    return BarChart(
        title=title,
        bars=tuple(bars),
        scale=1.0,
        note=f"{len(rest)} more {name}s not shown" if rest else "",
        legend=(("learned", "learned"), ("unlearned", "unlearned"), ("invalid", "invalid")),
    )


def _trajectory_chart(records: Sequence[Mapping[str, Any]]) -> BarChart | None:
    """Where along the stages learning was lost: of today's unlearned samples, how many each
    checkpoint of the history had learned (present when the run had `--ilp-history`)."""
    learned: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    order: list[str] = []
    for record in records:
        history = ((record.get("signals") or {}).get("history")) or {}
        for point in history.get("trajectory") or []:
            label = str(point.get("label"))
            if label not in seen:
                order.append(label)
            seen[label] += 1
            learned[label] += bool(point.get("learned"))
    if len(order) < 2:
        return None
    bars = tuple(
        Bar(
            label=label,
            segments=(("learned", learned[label] / seen[label], f"{learned[label]} learned"),),
            figure=f"{learned[label]} of {seen[label]}",
        )
        for label in order
    )
    return BarChart(
        title="Where learning was lost: today's unlearned samples, learned at each stage",
        bars=bars,
        scale=1.0,
        note="from the --ilp-history checkpoints, oldest first",
    )


def _histograms(records: Sequence[Mapping[str, Any]], fragile_margin: float) -> list[Histogram]:
    fragile = sum(1 for r in records if r.get("fragile"))
    margin = _histogram(
        "Margin of the target over the runner-up",
        "nats",
        _by_outcome(records, "margin"),
        note=f"{fragile} fragile: learned with a margin under {fragile_margin:g} nats",
        marks=((fragile_margin, f"fragile < {fragile_margin:g}"),),
        band=(0.0, fragile_margin, "fragile"),
    )
    nll = _histogram("Mean NLL of the target", "nats per token", _by_outcome(records, "nll"))
    return [margin, nll]


def _by_outcome(
    records: Sequence[Mapping[str, Any]], key: str
) -> list[tuple[str, str, list[float]]]:
    """The finite values of `key`, of the learned and of the unlearned samples."""
    return [
        (
            name,
            name,
            [r[key] for r in records if r.get("learned") is learned and _finite(r.get(key))],
        )
        for name, learned in (("learned", True), ("unlearned", False))
    ]


def _histogram(
    title: str,
    unit: str,
    series: Sequence[tuple[str, str, Sequence[float]]],
    note: str = "",
    marks: tuple[tuple[float, str], ...] = (),
    band: tuple[float, float, str] | None = None,
) -> Histogram:
    """Equal bins from the 1st to the 99th percentile; values outside fall in the edge bins,
    so one outlier does not squeeze every other sample into a single bar."""
    values = sorted(v for _, _, vs in series for v in vs)
    if not values:
        return Histogram(title, unit, (0.0, 1.0), (), note=note, empty=True)
    low, high = _quantile(values, 0.01), _quantile(values, 0.99)
    for x, _ in marks:
        if values[0] <= x <= values[-1]:
            low, high = min(low, x), max(high, x)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    step = (high - low) / HISTOGRAM_BINS
    edges = tuple(low + i * step for i in range(HISTOGRAM_BINS + 1))
    binned = []
    for css, label, vs in series:
        counts = [0] * HISTOGRAM_BINS
        for v in vs:
            counts[min(max(int((v - low) / step), 0), HISTOGRAM_BINS - 1)] += 1
        binned.append((css, f"{label} ({len(vs)})", tuple(counts)))
    inside = tuple(m for m in marks if low <= m[0] <= high)
    shown_band = None
    if band is not None and band[1] > low and band[0] < high:
        shown_band = (max(band[0], low), min(band[1], high), band[2])
    return Histogram(title, unit, edges, tuple(binned), inside, shown_band, note)


def _quantile(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _baseline(gate: GateResult | None) -> dict[str, Any] | None:
    if gate is None or gate.baseline is None:
        return None
    return {
        "path": gate.baseline,
        "regressions": list(gate.regressions),
        "fixed": list(gate.fixed),
        "known": list(gate.known),
    }


def _filter_options(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    causes = Counter(r["cause"] for r in records if r.get("cause"))
    return {
        "cause": [c for c in CAUSES if c in causes] + sorted(c for c in causes if c not in CAUSES),
        "stage": sorted({r.get("stage") or NO_STAGE for r in records}),
        "tag": sorted({t for r in records for t in (r.get("tags") or [NO_TAG])}),
        "baseline": sorted({r["baseline"] for r in records if r.get("baseline")}),
        "outcome": [o for o in OUTCOMES if any(r.get("gate") == o for r in records)],
    }
