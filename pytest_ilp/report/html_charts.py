"""The HTML report's charts: bar charts and histograms, as plain data its template draws as SVG.

Hand-drawn SVG rather than matplotlib or plotly: they are bar charts and histograms only, a
few lines of geometry each; drawn here they cost no dependency (matplotlib would be a large
install and a slow import for four bar charts), follow the page's light and dark styles, and
each bar is a link that filters the table.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_ilp.core.causes import CAUSES
from pytest_ilp.core.gate import GateResult, Row
from pytest_ilp.report.records import SampleRecord

#: bins of the margin and NLL histograms.
HISTOGRAM_BINS = 30
#: stages and tags shown in their charts, the most frequent first; the rest are summed up.
CHART_GROUPS = 20
NO_STAGE = "(no stage)"
NO_TAG = "(no tag)"


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


def charts(
    records: Sequence[SampleRecord], gate: GateResult | None, samples: int
) -> list[BarChart]:
    charts = [_cause_chart(records, gate, samples)]
    charts.append(
        _share_chart(
            "Learned share per stage",
            "stage",
            [(r, [r.stage or NO_STAGE]) for r in records],
        )
    )
    charts.append(
        _share_chart(
            "Learned share per tag", "tag", [(r, list(r.tags or [NO_TAG])) for r in records]
        )
    )
    lost = _trajectory_chart(records)
    if lost is not None:
        charts.append(lost)
    return charts


def _cause_chart(
    records: Sequence[SampleRecord], gate: GateResult | None, samples: int
) -> BarChart:
    """Unlearned samples per cause, each against its budget (of the run's own scope)."""
    counts = Counter(r.cause or "undiagnosed" for r in records if r.unlearned)
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
    title: str, name: str, grouped: Iterable[tuple[SampleRecord, list[str]]]
) -> BarChart:
    """Learned, unlearned and invalid samples of each group, as shares of the group."""
    tallies: dict[str, Counter[str]] = {}
    for record, groups in grouped:
        learned = record.learned
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


def _trajectory_chart(records: Sequence[SampleRecord]) -> BarChart | None:
    """Where along the stages learning was lost: of today's unlearned samples, how many each
    checkpoint of the history had learned (present when the run had `--ilp-history`)."""
    learned: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    order: list[str] = []
    for record in records:
        history = ((record.signals or {}).get("history")) or {}
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


def histograms(records: Sequence[SampleRecord], fragile_margin: float) -> list[Histogram]:
    fragile = sum(1 for r in records if r.fragile)
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


def _by_outcome(records: Sequence[SampleRecord], key: str) -> list[tuple[str, str, list[float]]]:
    """The finite values of `key`, of the learned and of the unlearned samples."""
    return [
        (
            name,
            name,
            [v for r in records if r.learned is learned and _finite(v := getattr(r, key))],
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
