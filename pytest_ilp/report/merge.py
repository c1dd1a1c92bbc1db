"""Merge the JSON reports of sample shards (`--ilp-shard=i/n`) into the report of the whole.

The budgets are evaluated again on the whole: a share of 2% is 2% of all samples, not of each
shard. Everything the gate needs is in the reports (per sample: learned, cause, must-learn,
baseline comparison, scopes; per scope: budgets), so no model runs here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

from pytest_ilp.core.gate import Decision, Scope, evaluate
from pytest_ilp.core.shards import Shard
from pytest_ilp.core.thresholds import Threshold
from pytest_ilp.report.model import MergedFrom, Report
from pytest_ilp.report.records import SampleGate, SampleRecord


class MergeError(ValueError):
    """The reports cannot be merged; the message says which and why."""


def merge_reports(reports: Sequence[tuple[str, Report]]) -> Report:
    """One report from the `(name, report)` of each shard, with the gate evaluated again.

    The one place a gate is evaluated from reports rather than from a run: the budgets need
    the counts of the whole, so the shards' records are recombined (as `GateSample`s) and
    decided by `gate.evaluate`, the function a run uses."""
    if not reports:
        raise MergeError("no reports to merge")
    for name, report in reports:
        if report.gate is None:
            raise MergeError(
                f"{name}: the report has no `gate` (written by a pytest-ilp without the CI "
                "gate, or by a run that scored nothing)"
            )
    first_name, first = reports[0]
    for name, report in reports[1:]:
        for key in ("checkpoint", "fragile_margin"):
            if getattr(report, key) != getattr(first, key):
                raise MergeError(
                    f"{name} has {key} {getattr(report, key)!r} but {first_name} has "
                    f"{getattr(first, key)!r}: merge the reports of one run"
                )
    _check_shards(reports)
    records: list[SampleRecord] = []
    seen: dict[str, str] = {}
    for name, report in reports:
        for record in report.samples:
            if record.id in seen:
                raise MergeError(
                    f"sample {record.id!r} is in both {seen[record.id]} and {name}: "
                    "merge the reports of disjoint shards"
                )
            seen[record.id] = name
            records.append(record)
    records.sort(key=_source_order)
    strict, baseline, budgets = _merged_gate_settings(reports)
    members: dict[str, list[str]] = {key: [] for key in budgets}
    for record in records:
        for key in record.gate.scopes if record.gate is not None else ():
            members.setdefault(key, []).append(record.id)
    gate = evaluate(
        {record.id: record.gate_sample() for record in records},
        [
            # The shards' samples outside their selection are the other shards' records:
            # counted once, as records.
            Scope(key, budgets.get(key, {}), tuple(ids))
            for key, ids in members.items()
        ],
        strict=strict,
        baseline=baseline,
    )
    unread = dict.fromkeys(node for _, r in reports for node in (r.gate.unread if r.gate else ()))
    gate = replace(gate, unread=tuple(unread))
    return Report(
        checkpoint=first.checkpoint,
        backend=first.backend,
        fragile_margin=first.fragile_margin,
        samples=tuple(_decided(record, gate.decision(record.id)) for record in records),
        shard=None,
        # Every shard collects every file, so each lists the same errors: keep each once.
        collection_errors=tuple(
            {e.node: e for _, report in reports for e in report.collection_errors}.values()
        ),
        gate=gate,
        merged_from=tuple(MergedFrom(name, report.shard) for name, report in reports),
    )


def _decided(record: SampleRecord, decision: Decision) -> SampleRecord:
    scopes, baseline = (record.gate.scopes, record.gate.baseline) if record.gate else ((), None)
    return replace(
        record, gate=SampleGate(decision.outcome, decision.reason or None, scopes, baseline)
    )


def _source_order(record: SampleRecord) -> tuple[str, int]:
    """Data file, then line or row: the order of an unsharded run over the same files."""
    path, _, line = record.source.rpartition(":")
    digits = line.removeprefix("row ").strip()
    return path, int(digits) if digits.isdigit() else 0


def _check_shards(reports: Sequence[tuple[str, Report]]) -> None:
    """Shard reports must be all the shards of one split, once each."""
    labels = [report.shard for _, report in reports]
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


def _merged_gate_settings(
    reports: Sequence[tuple[str, Report]],
) -> tuple[bool, str | None, dict[str, Mapping[str, Threshold]]]:
    """The gate settings the reports share: strict, baseline, and each scope's budgets."""
    first_name, first = reports[0]
    assert first.gate is not None
    budgets: dict[str, Mapping[str, Threshold]] = {}
    where: dict[str, str] = {}
    for name, report in reports:
        gate = report.gate
        assert gate is not None
        for key in ("strict", "baseline"):
            if getattr(gate, key) != getattr(first.gate, key):
                raise MergeError(
                    f"{name} was run with {key} {getattr(gate, key)!r} but {first_name} with "
                    f"{getattr(first.gate, key)!r}"
                )
        for result in gate.scopes:
            scope = result.scope
            if scope.key in budgets and budgets[scope.key] != scope.budgets:
                raise MergeError(
                    f"{name} and {where[scope.key]} have different budgets for "
                    f"{scope.key or 'the run'}: {_written(scope.budgets)} and "
                    f"{_written(budgets[scope.key])}"
                )
            budgets.setdefault(scope.key, scope.budgets)
            where.setdefault(scope.key, name)
    return first.gate.strict, first.gate.baseline, budgets


def _written(budgets: Mapping[str, Threshold]) -> dict[str, dict[str, float | int]]:
    return {name: budget.to_dict() for name, budget in budgets.items()}
