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

from pytest_ilp.report.json_report import READABLE_SCHEMAS, REPORT_SCHEMA


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
    if not isinstance(document, Mapping) or "schema" not in document:
        raise BaselineError("not a pytest-ilp report (no `schema` field at the top level)")
    if document["schema"] not in READABLE_SCHEMAS:
        raise BaselineError(
            f"report schema {document['schema']!r}, but this pytest-ilp reads schemas "
            f"{', '.join(map(str, READABLE_SCHEMAS))} (it writes {REPORT_SCHEMA}): regenerate it "
            "with --ilp-update-baseline"
        )
    samples = document.get("samples")
    if not isinstance(samples, list):
        raise BaselineError("`samples` must be a list of sample records")
    learned: dict[str, bool | None] = {}
    for index, record in enumerate(samples):
        where = f"samples[{index}]"
        if not isinstance(record, Mapping):
            raise BaselineError(f"{where} must be a mapping")
        sample_id = record.get("id")
        if not isinstance(sample_id, str):
            raise BaselineError(f"{where} has no string `id`")
        value = record.get("learned")
        if value is not None and not isinstance(value, bool):
            raise BaselineError(f"{where} ({sample_id}): `learned` must be true, false or null")
        if sample_id in learned:
            raise BaselineError(f"{where}: sample id {sample_id!r} appears twice")
        learned[sample_id] = value
    return learned
