"""Merge the JSON reports of sample shards (`--ilp-shard=i/n`) into the report of the whole.

The budgets are evaluated again on the whole: a share of 2% is 2% of all samples, not of each
shard. Everything the gate needs is in the reports (per sample: learned, cause, must-learn,
baseline comparison, scopes; per scope: budgets), so no model runs here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_ilp.core.shards import Shard
from pytest_ilp.report.check import REPORT_SCHEMA, ReportError, check_report
from pytest_ilp.report.json_report import gate_of, summarize


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
        "summary": summarize(samples).as_dict(),
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


def _check(name: str, document: Mapping[str, Any]) -> None:
    try:
        check_report(document, needs=_REPORT_KEYS)
    except ReportError as exc:
        raise MergeError(f"{name}: {exc}") from None
    if not isinstance(document["gate"], Mapping):
        raise MergeError(
            f"{name}: the report has no `gate` (written by a pytest-ilp without the CI gate, or "
            "by a run that scored nothing)"
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
