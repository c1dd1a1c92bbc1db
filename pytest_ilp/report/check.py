"""Reading a JSON report back (a baseline, a shard to merge, a page to draw): one check, one parse.

`read_report` reads a file, `parse_report` a document already loaded: both check it against
the published JSON Schema (`schema.json` beside this module, docs/json-report.md), so that a
file that is not a report, a report of an unknown schema or a torn one gets one clear message
naming it from every reader, never a KeyError; then they parse it into a `Report`. The schema is
the only statement of what a report holds: the messages are derived from it (a field's
`description` says what it must be), and the one rule JSON Schema cannot state, unique sample
ids, is checked here.

The schema is checked with jsonschema-rs, a compiled validator: about 6 µs a sample record
where the pure-Python jsonschema takes about 1.2 ms (`benchmarks/report_read.py`), so the check
of a baseline of 100,000 samples takes under a second, not two minutes; reading the JSON costs
more. (The suite checks real reports with jsonschema as well, as a second, independent
implementation of the standard.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from pytest_ilp.report.model import READABLE_SCHEMAS, REPORT_SCHEMA, Report

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


def read_report(path: Path) -> Report:
    """The report in the file at `path`; raises `ReportError` whose message starts with it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"{path}: cannot read it: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: not a JSON report ({exc})") from None
    try:
        return parse_report(document)
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    except ReportError as exc:
        raise ReportError(f"{path}: {exc}") from None


def parse_report(document: Any) -> Report:
    """`check_report`, then the document as a `Report`."""
    check_report(document)
    return Report.from_dict(document)


def check_report(document: Any) -> None:
    """Raise `ReportError` unless `document` is a report of a readable schema that follows
    the published JSON Schema and names each sample once."""
    if not isinstance(document, Mapping) or "schema" not in document:
        raise ReportError("not a pytest-ilp report (no `schema` field at the top level)")
    if document["schema"] not in READABLE_SCHEMAS:
        raise SchemaError(
            f"report schema {document['schema']!r}, but this pytest-ilp reads schemas "
            f"{', '.join(map(str, READABLE_SCHEMAS))} (it writes {REPORT_SCHEMA})"
        )
    errors = list(_validator().iter_errors(document))
    if errors:
        raise ReportError(_message(document, errors))
    seen: set[str] = set()
    for index, record in enumerate(document["samples"]):
        if record["id"] in seen:
            raise ReportError(f"samples[{index}]: sample id {record['id']!r} appears twice")
        seen.add(record["id"])


@cache
def _validator() -> Any:
    import jsonschema_rs

    return jsonschema_rs.validator_for(report_schema())


def _message(document: Any, errors: Sequence[Any]) -> str:
    """One line for the shallowest error: the fields missing at the top level, or where the
    document breaks the schema and what that field must be."""
    top = [e for e in errors if not list(e.instance_path) and _kind(e) == "Required"]
    if top:
        missing = ", ".join(e.kind.property for e in top)
        return f"not a whole pytest-ilp report (no {missing})"
    error = min(errors, key=lambda e: (len(list(e.instance_path)), str(e.message)))
    path = list(error.instance_path)
    if _kind(error) == "Required":
        path.append(error.kind.property)
    elif _kind(error) not in ("Type", "Enum"):
        return f"{_where(document, path)}: {error.message}"
    return f"{_where(document, path)} must be {_expected(error)}"


def _kind(error: Any) -> str:
    return type(error.kind).__name__


def _where(document: Any, path: Sequence[str | int]) -> str:
    """`gate.scopes`, or `samples[3] (q0007): `learned`` for a field of a sample record."""
    if len(path) >= 2 and path[0] == "samples" and isinstance(path[1], int):
        record = document["samples"][path[1]]
        named = isinstance(record, Mapping) and isinstance(record.get("id"), str)
        sample = f"samples[{path[1]}]" + (f" ({record['id']})" if named else "")
        return sample + (": `" + ".".join(map(str, path[2:])) + "`" if path[2:] else "")
    return "`" + ".".join(map(str, path)) + "`" if path else "the report"


_TYPES = {
    "boolean": "true, false",
    "null": "null",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "object": "an object",
    "array": "a list",
}


def _expected(error: Any) -> str:
    """What the field an error is about must be: its schema's `description`, else its types
    ("true, false or null") or its values."""
    schema = report_schema()
    node: Any = schema
    for step in list(error.schema_path)[:-1]:
        node = node[step]
    if _kind(error) == "Required":
        node = node.get("properties", {}).get(error.kind.property, {})
    while "$ref" in node:
        node = _resolve(schema, node["$ref"])
    return _describe(node)


def _describe(node: Mapping[str, Any]) -> str:
    if "description" in node:
        return str(node["description"])
    if "enum" in node:
        names = [json.dumps(v) for v in node["enum"]]
    else:
        types = node.get("type", [])
        names = [_TYPES.get(t, t) for t in ([types] if isinstance(types, str) else types)]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def _resolve(schema: Mapping[str, Any], ref: str) -> Any:
    node: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node
