"""Baselines: an earlier JSON report that a run is compared with, sample by sample (by id).

A sample unlearned in both is *known*, one learned there and unlearned now is a *regression*,
one unlearned there and learned now is *fixed* (see `gate.compare_with_baseline`). Samples the
baseline does not hold are judged by the budgets alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ilp.report.check import ReportError, SchemaError, check_report


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
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BaselineError(f"cannot read it: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(
            f"not a JSON report ({exc}); regenerate it with --ilp-update-baseline"
        ) from None
    return Baseline(path, learned_by_id(document))


def learned_by_id(document: Any) -> dict[str, bool | None]:
    """The `learned` field of every sample of a report (schema 1 or 2), checked."""
    try:
        check_report(document)
    except ReportError as exc:
        hint = ": regenerate it with --ilp-update-baseline" if isinstance(exc, SchemaError) else ""
        raise BaselineError(f"{exc}{hint}") from None
    return {record["id"]: record.get("learned") for record in document["samples"]}
