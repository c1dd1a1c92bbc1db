"""The JSON report as typed data: `Report` and its parts, written and parsed here only.

A `Report` is what `--ilp-report` writes (schema 2, docs/json-report.md, `schema.json`), what
an xdist worker sends its controller, what a baseline, `merge` and the HTML page read back,
and what `pytest_ilp.check` returns. Every reader takes a `Report`, never a dict:

- `Report.to_dict()` is the one writer of the document (its keys in the order reports have
  always had), `Report.from_dict()` the one parser; `report.check.read_report` validates a file
  against the published schema first, naming the file on a refusal;
- the summary is computed once, by `summarize`, from the sample records, when a `Report` is
  made: it can never disagree with them;
- the gate is the `GateResult` the run evaluated, carried as it is. Read back from a file it is
  rebuilt from what was written (each scope's table, each sample's decision and scopes), never
  evaluated again; only `merge`, which must recombine the shards' counts, evaluates the gate
  anew, from typed records, with the one gate function.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_ilp.core.causes import CAUSES
from pytest_ilp.core.diagnosis import WEAK
from pytest_ilp.core.gate import (
    Decision,
    GateResult,
    GateSample,
    Row,
    Scope,
    ScopeResult,
)
from pytest_ilp.core.thresholds import Threshold
from pytest_ilp.report.records import SampleRecord, json_text

#: 2: every sample record says which criterion judged it (`criterion`, `criterion_figures`)
#: and the summary counts samples per criterion (`criteria`).
REPORT_SCHEMA = 2
#: the schemas this version reads back (baselines, merge): a schema-1 report is all `exact`.
READABLE_SCHEMAS = (1, 2)


@dataclass(frozen=True)
class Summary:
    """The report's counts (`summary`); `summarize` computes it."""

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

    def to_dict(self) -> dict[str, Any]:
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


def summarize(records: Sequence[SampleRecord]) -> Summary:
    """The report's `summary`, from its sample records: the one place it is computed, for a
    run's report, a trainer callback's, a merge of shard reports and a report read back."""
    unlearned = [r for r in records if r.unlearned]
    causes = Counter(r.cause for r in unlearned if r.cause is not None)
    weak = Counter(r.cause for r in unlearned if r.cause is not None and r.confidence == WEAK)
    order = [c for c in CAUSES if c in causes] + sorted(c for c in causes if c not in CAUSES)
    return Summary(
        samples=len(records),
        learned=sum(1 for r in records if r.learned is True),
        unlearned=len(unlearned),
        must_learn=sum(1 for r in records if r.must_learn),
        must_learn_unlearned=tuple(r.id for r in unlearned if r.must_learn),
        fragile=tuple(r.id for r in records if r.fragile),
        invalid=tuple(r.id for r in records if r.error is not None),
        causes={cause: causes[cause] for cause in order},
        # A schema-1 report's records predate criteria: they were judged exact.
        criteria=dict(Counter(r.criterion or "exact" for r in records if r.learned is not None)),
        weak_causes={cause: weak[cause] for cause in order if cause in weak},
    )


@dataclass(frozen=True)
class CollectionError:
    """A data file (node id) that failed to collect, and the error's last line."""

    node: str
    error: str


@dataclass(frozen=True)
class MergedFrom:
    """One shard report a merged report was made from."""

    report: str
    shard: str | None


@dataclass(frozen=True)
class Report:
    """A whole JSON report; `summary` is computed from `samples` when it is made."""

    checkpoint: str
    backend: str
    fragile_margin: float
    samples: tuple[SampleRecord, ...]
    #: "i/n" for a shard's report.
    shard: str | None = None
    collection_errors: tuple[CollectionError, ...] = ()
    #: None for a report without a gate (nothing was scored, or the trainer callback's).
    gate: GateResult | None = None
    #: the shard reports of a merged report; None otherwise.
    merged_from: tuple[MergedFrom, ...] | None = None
    schema: int = REPORT_SCHEMA
    summary: Summary = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary", summarize(self.samples))

    def to_dict(self) -> dict[str, Any]:
        """The document, as `--ilp-report` writes it (`json_text` makes it text)."""
        document: dict[str, Any] = {
            "schema": self.schema,
            "checkpoint": self.checkpoint,
            "backend": self.backend,
            "fragile_margin": self.fragile_margin,
            "samples": [record.to_dict() for record in self.samples],
            "summary": self.summary.to_dict(),
            "shard": self.shard,
        }
        if self.merged_from is not None:
            document["merged_from"] = [
                {"report": m.report, "shard": m.shard} for m in self.merged_from
            ]
        document["collection_errors"] = [
            {"node": e.node, "error": e.error} for e in self.collection_errors
        ]
        if self.gate is not None:
            document["gate"] = self.gate.to_dict()
        return document

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Report:
        """The report of a document that `report.check.check_report` accepted (or that this
        version wrote: an xdist worker's). Its stored `summary` is not read: it is computed."""
        samples = tuple(SampleRecord.from_dict(r) for r in document["samples"])
        merged = document.get("merged_from")
        recorded = document.get("gate")
        return cls(
            checkpoint=document["checkpoint"],
            backend=document["backend"],
            fragile_margin=document["fragile_margin"],
            samples=samples,
            shard=document.get("shard"),
            collection_errors=tuple(
                CollectionError(e["node"], e["error"])
                for e in document.get("collection_errors") or ()
            ),
            gate=None if recorded is None else read_gate(recorded, samples),
            merged_from=None
            if merged is None
            else tuple(MergedFrom(m["report"], m.get("shard")) for m in merged),
            schema=document["schema"],
        )

    def to_json(self) -> str:
        """The report file's text (strict JSON, indented, ending in a newline)."""
        return json_text(self.to_dict()) + "\n"


def read_gate(recorded: Mapping[str, Any], samples: Sequence[SampleRecord]) -> GateResult:
    """The gate as a report wrote it, not evaluated again: each scope's table as written, each
    sample's decision (the worst over its scopes) in every scope it is in, and the lists."""
    members: dict[str, list[SampleRecord]] = {s["scope"]: [] for s in recorded["scopes"]}
    for record in samples:
        for key in record.gate.scopes if record.gate is not None else ():
            members.setdefault(key, []).append(record)
    scopes = []
    for written in recorded["scopes"]:
        inside = members[written["scope"]]
        others = tuple(GateSample.from_dict(o) for o in written.get("outside_selection") or ())
        size = written.get("samples", len(inside) + len(others))
        scope = Scope(
            key=written["scope"],
            budgets={name: Threshold.from_dict(b) for name, b in written["budgets"].items()},
            sample_ids=tuple(r.id for r in inside),
            others=others,
        )
        rows = tuple(
            Row(
                name=row["name"],
                count=row["unlearned"],
                samples=size,
                budget=None if row.get("budget") is None else Threshold.from_dict(row["budget"]),
                default=bool(row.get("default_budget")),
                known=row.get("known", 0),
            )
            for row in written.get("rows") or ()
        )
        decisions = {
            r.id: Decision(r.gate.outcome, r.gate.reason or "")
            for r in inside
            if r.gate is not None and r.gate.outcome is not None
        }
        scopes.append(ScopeResult(scope, rows, decisions))
    in_scope = {r.id: r for key in members for r in members[key]}
    return GateResult(
        scopes=tuple(scopes),
        strict=bool(recorded["strict"]),
        must_learn_unlearned=tuple(recorded.get("must_learn_unlearned") or ()),
        invalid=tuple(recorded.get("invalid") or ()),
        unlearned=tuple(i for i, r in in_scope.items() if r.unlearned),
        known=tuple(recorded.get("known") or ()),
        regressions=tuple(recorded.get("regressions") or ()),
        fixed=tuple(recorded.get("fixed") or ()),
        baseline=recorded["baseline"],
        unread=tuple(recorded.get("unread") or ()),
    )
