"""One check of a JSON report read back (a baseline, a shard to merge, a page to draw).

Every reader of reports calls `check_report` before it trusts a field, so a file that is not a
report, a report of an unknown schema or a torn one gets the same one-line message from each,
never a KeyError. What it enforces is a subset of the published schema
(`schema.json` beside this module); the tests check that the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: 2: every sample record says which criterion judged it (`criterion`, `criterion_figures`)
#: and the summary counts samples per criterion (`criteria`).
REPORT_SCHEMA = 2
#: the schemas this version reads back (baselines, merge): a schema-1 report is all `exact`.
READABLE_SCHEMAS = (1, 2)
#: the published JSON Schema of reports (both readable schemas), shipped in the package and
#: described in docs/json-report.md.
SCHEMA_FILE = Path(__file__).with_name("schema.json")


class ReportError(ValueError):
    """The document is not a report this version reads; the message says why."""


class SchemaError(ReportError):
    """A report of a schema this version does not read (a newer one, most likely)."""


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every report this version writes or reads."""
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


def check_report(document: Any, *, needs: Sequence[str] = ()) -> None:
    """Raise `ReportError` unless `document` is a report of a readable schema whose sample
    records each have a unique string `id` and a `learned` of true, false or null, with the
    top-level fields `needs` and, if it has a gate, well-formed budget scopes."""
    if not isinstance(document, Mapping) or "schema" not in document:
        raise ReportError("not a pytest-ilp report (no `schema` field at the top level)")
    if document["schema"] not in READABLE_SCHEMAS:
        raise SchemaError(
            f"report schema {document['schema']!r}, but this pytest-ilp reads schemas "
            f"{', '.join(map(str, READABLE_SCHEMAS))} (it writes {REPORT_SCHEMA})"
        )
    missing = [key for key in needs if key not in document]
    if missing:
        raise ReportError(f"not a whole pytest-ilp report (no {', '.join(missing)})")
    samples = document.get("samples")
    if not isinstance(samples, list):
        raise ReportError("`samples` must be a list of sample records")
    seen: set[str] = set()
    for index, record in enumerate(samples):
        where = f"samples[{index}]"
        if not isinstance(record, Mapping) or not isinstance(record.get("id"), str):
            raise ReportError(f"{where} has no string `id`")
        value = record.get("learned", "missing")
        if value is not None and not isinstance(value, bool):
            raise ReportError(f"{where} ({record['id']}): `learned` must be true, false or null")
        if record["id"] in seen:
            raise ReportError(f"{where}: sample id {record['id']!r} appears twice")
        seen.add(record["id"])
    gate = document.get("gate")
    if gate is not None:
        scopes = gate.get("scopes") if isinstance(gate, Mapping) else None
        if not isinstance(scopes, list) or not all(
            isinstance(s, Mapping) and "scope" in s and isinstance(s.get("budgets"), Mapping)
            for s in scopes
        ):
            raise ReportError("`gate.scopes` must be a list of {scope, budgets} records")
