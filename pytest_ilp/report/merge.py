"""Merge the JSON reports of sample shards (`--ilp-shard=i/n`) into the report of the whole.

The budgets are evaluated again on the whole: a share of 2% is 2% of all samples, not of each
shard. Everything the gate needs is in the reports (per sample: learned, cause, must-learn,
baseline comparison, scopes; per scope: budgets), so no model runs here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_ilp.core.causes import CAUSES
from pytest_ilp.core.shards import Shard
from pytest_ilp.report.json_report import READABLE_SCHEMAS, REPORT_SCHEMA, Summary, gate_of


class MergeError(ValueError):
    """The reports cannot be merged; the message says which and why."""


def merge_reports(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One report from the `(name, document)` of each shard, with the gate evaluated again."""
    if not reports:
        raise MergeError("no reports to merge")
    for name, document in reports:
        _check(name, document)
    first_name, first = reports[0]
    for name, document in reports[1:]:
        for key in ("checkpoint", "fragile_margin"):
            if document[key] != first[key]:
                raise MergeError(
                    f"{name} has {key} {document[key]!r} but {first_name} has {first[key]!r}: "
                    "merge the reports of one run"
                )
    _check_shards(reports)
    samples: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for name, document in reports:
        for record in document["samples"]:
            if record["id"] in seen:
                raise MergeError(
                    f"sample {record['id']!r} is in both {seen[record['id']]} and {name}: "
                    "merge the reports of disjoint shards"
                )
            seen[record["id"]] = name
            samples.append(dict(record))
    samples.sort(key=_source_order)
    merged: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "checkpoint": first["checkpoint"],
        "backend": first["backend"],
        "fragile_margin": first["fragile_margin"],
        "samples": samples,
        "summary": summary_of_records(samples).as_dict(),
        "shard": None,
        "merged_from": [
            {"report": name, "shard": document.get("shard")} for name, document in reports
        ],
        # Every shard collects every file, so each lists the same errors: keep each once.
        "collection_errors": list(
            {
                error["node"]: error
                for _, document in reports
                for error in document.get("collection_errors") or []
            }.values()
        ),
        "gate": _merged_gate_settings(reports),
    }
    gate = gate_of(merged)
    assert gate is not None
    for record in samples:
        decision = gate.decision(record["id"])
        record.update(gate=decision.outcome, gate_reason=decision.reason or None)
    merged["gate"] = gate.to_dict()
    return merged


def _source_order(record: Mapping[str, Any]) -> tuple[str, int]:
    """Data file, then line or row: the order of an unsharded run over the same files."""
    path, _, line = str(record.get("source") or "").rpartition(":")
    digits = line.removeprefix("row ").strip()
    return path, int(digits) if digits.isdigit() else 0


def summary_of_records(records: Sequence[Mapping[str, Any]]) -> Summary:
    """The report's `summary` computed from its sample records (as `report.summarize` does from
    the outcomes)."""
    unlearned = [r for r in records if r["learned"] is False]
    counts = Counter(r["cause"] for r in unlearned if r.get("cause") is not None)
    weak = Counter(
        r["cause"]
        for r in unlearned
        if r.get("cause") is not None and r.get("confidence") == "weak"
    )
    order = [c for c in CAUSES if c in counts] + sorted(c for c in counts if c not in CAUSES)
    return Summary(
        samples=len(records),
        learned=sum(1 for r in records if r["learned"] is True),
        unlearned=len(unlearned),
        must_learn=sum(1 for r in records if r.get("must_learn")),
        must_learn_unlearned=tuple(r["id"] for r in unlearned if r.get("must_learn")),
        fragile=tuple(r["id"] for r in records if r.get("fragile")),
        invalid=tuple(r["id"] for r in records if r.get("error") is not None),
        causes={cause: counts[cause] for cause in order},
        # A schema-1 report's records predate criteria: they were judged exact.
        criteria=dict(
            Counter(r.get("criterion") or "exact" for r in records if r.get("learned") is not None)
        ),
        weak_causes={cause: weak[cause] for cause in order if cause in weak},
    )


def _check(name: str, document: Mapping[str, Any]) -> None:
    if not isinstance(document, Mapping) or "schema" not in document:
        raise MergeError(f"{name}: not a pytest-ilp report (no `schema` field)")
    if document["schema"] not in READABLE_SCHEMAS:
        raise MergeError(
            f"{name}: report schema {document['schema']!r}, but this pytest-ilp reads schemas "
            f"{', '.join(map(str, READABLE_SCHEMAS))} (it writes {REPORT_SCHEMA})"
        )
    missing = [key for key in _REPORT_KEYS if key not in document]
    if missing:
        raise MergeError(f"{name}: not a whole pytest-ilp report (no {', '.join(missing)})")
    if not isinstance(document.get("samples"), list):
        raise MergeError(f"{name}: `samples` must be a list")
    gate = document.get("gate")
    if not isinstance(gate, Mapping):
        raise MergeError(
            f"{name}: the report has no `gate` (written by a pytest-ilp without the CI gate, or "
            "by a run that scored nothing)"
        )
    scopes = gate.get("scopes")
    if not isinstance(scopes, list) or not all(
        isinstance(s, Mapping) and "scope" in s and isinstance(s.get("budgets"), Mapping)
        for s in scopes
    ):
        raise MergeError(f"{name}: `gate.scopes` must be a list of {{scope, budgets}} records")
    for index, record in enumerate(document["samples"]):
        if not isinstance(record, Mapping) or not isinstance(record.get("id"), str):
            raise MergeError(f"{name}: samples[{index}] is not a sample record with an `id`")
        if record.get("learned") not in (True, False, None) or "learned" not in record:
            raise MergeError(
                f"{name}: samples[{index}] ({record['id']}): `learned` must be true, false or null"
            )


#: the top-level fields of a report that merging reads.
_REPORT_KEYS = ("checkpoint", "backend", "fragile_margin", "samples", "gate")


def _check_shards(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Shard reports must be all the shards of one split, once each."""
    labels = [document.get("shard") for _, document in reports]
    if all(label is None for label in labels):
        return
    if any(label is None for label in labels):
        unsharded = [name for (name, _), label in zip(reports, labels) if label is None]
        raise MergeError(f"{', '.join(unsharded)}: not a shard report, but the others are")
    try:
        shards = [Shard.parse(str(label)) for label in labels]
    except ValueError as exc:
        raise MergeError(f"a report's `shard`: {exc}") from None
    counts = {s.count for s in shards}
    if len(counts) != 1:
        raise MergeError(
            f"the reports are shards of different splits: {', '.join(map(str, labels))}"
        )
    count = counts.pop()
    present = Counter(s.index for s in shards)
    twice = [f"{i}/{count}" for i, n in sorted(present.items()) if n > 1]
    if twice:
        raise MergeError(f"shard {', '.join(twice)} given more than once")
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in present]
    if missing:
        raise MergeError(
            f"shard {', '.join(missing)} missing: the budgets apply to the whole, so pass the "
            "report of every shard"
        )


def _merged_gate_settings(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The gate settings the reports share: strict, baseline, and each scope's budgets."""
    first_name, first = reports[0]
    scopes: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name, document in reports:
        gate = document["gate"]
        for key in ("strict", "baseline"):
            if gate.get(key) != first["gate"].get(key):
                raise MergeError(
                    f"{name} was run with {key} {gate.get(key)!r} but {first_name} with "
                    f"{first['gate'].get(key)!r}"
                )
        for scope in gate["scopes"]:
            key = scope["scope"]
            if key in scopes and scopes[key] != scope["budgets"]:
                raise MergeError(
                    f"{name} and {where[key]} have different budgets for "
                    f"{key or 'the run'}: {scope['budgets']} and {scopes[key]}"
                )
            scopes.setdefault(key, scope["budgets"])
            where.setdefault(key, name)
    return {
        "strict": first["gate"].get("strict", False),
        "baseline": first["gate"].get("baseline"),
        "scopes": [{"scope": key, "budgets": budgets} for key, budgets in scopes.items()],
        "unread": list(
            dict.fromkeys(node for _, d in reports for node in d["gate"].get("unread") or [])
        ),
    }
