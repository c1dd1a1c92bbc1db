"""Baselines: an earlier JSON report that a run is compared with, sample by sample (by id).

A sample unlearned in both is *known*, one learned there and unlearned now is a *regression*,
one unlearned there and learned now is *fixed* (see `gate.compare_with_baseline`). Samples the
baseline does not hold are judged by the budgets alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ilp.report.check import ReportError, SchemaError, parse_report, read_report
from pytest_ilp.report.model import Report


class BaselineError(ValueError):
    """The baseline file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Baseline:
    path: Path
    #: whether each sample of the baseline was learned (None: it could not be checked).
    learned: Mapping[str, bool | None]


def load_baseline(path: Path) -> Baseline:
    """Read a report written by `--ilp-report` or `--ilp-update-baseline`."""
    try:
        report = read_report(path)
    except ReportError as exc:
        # The message names the file; the caller names the option, which names it too.
        reason = str(exc).removeprefix(f"{path}: ")
        raise BaselineError(_with_hint(reason, exc)) from None
    return Baseline(path, _learned(report))


def learned_by_id(document: Any) -> dict[str, bool | None]:
    """The `learned` field of every sample of a report document (schema 1 or 2), checked."""
    try:
        report = parse_report(document)
    except ReportError as exc:
        raise BaselineError(_with_hint(str(exc), exc)) from None
    return _learned(report)


def _learned(report: Report) -> dict[str, bool | None]:
    return {record.id: record.learned for record in report.samples}


def _with_hint(reason: str, exc: ReportError) -> str:
    if isinstance(exc, SchemaError):
        return f"{reason}: regenerate it with --ilp-update-baseline"
    if reason.startswith("not a JSON report"):
        return f"{reason}; regenerate it with --ilp-update-baseline"
    return reason
