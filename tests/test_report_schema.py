"""The published JSON Schema of reports agrees with the readers: what they refuse, it refuses.

Real reports are checked against it where the suite writes them: a gated run, shards and their
merge, a run against a baseline (tests/test_gate.py), the HTML report's diagnosed run
(tests/test_html_report.py) and the trainer callback's report (tests/test_trainer_callback.py).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pytest_ilp.core.baseline import BaselineError, learned_by_id
from pytest_ilp.report.check import SCHEMA_FILE, ReportError, parse_report, report_schema
from pytest_ilp.report.merge import merge_reports

from conftest import assert_valid_report

#: a small whole report, as a run writes it.
REPORT: dict[str, Any] = {
    "schema": 2,
    "checkpoint": "/models/final",
    "backend": "hf cpu float32",
    "fragile_margin": 0.1,
    "samples": [
        {
            "id": "a",
            "source": "data.jsonl:1",
            "stage": None,
            "tags": [],
            "must_learn": False,
            "learned": False,
            "criterion": "exact",
            "criterion_figures": {},
            "token_accuracy": 0.5,
            "target_tokens": 4,
            "first_divergence": {
                "position": 2,
                "expected": " red",
                "predicted": " blue",
                "expected_prob": 0.1,
                "predicted_prob": 0.8,
            },
            "nll": 1.2,
            "margin": -2.0,
            "fragile": False,
            "retokenized": False,
            "produced": " Kalo is blue.",
            "cause": "undiagnosed",
            "confidence": None,
            "causes": ["undiagnosed"],
            "evidence": "needs --ilp-base",
            "suggestion": "give --ilp-base",
            "figures": {},
            "signals": None,
            "error": None,
            "prompt": "Q: Kalo? A:",
            "messages": None,
            "target": " Kalo is red.",
            "target_token_probs": [[" Kalo", 0.9], [" is", 0.9], [" red", 0.1], [".", 0.5]],
            "gate": "tolerated",
            "gate_reason": "undiagnosed: 1 of 1 unlearned (100.0%), budget 100%",
            "gate_scopes": [""],
            "baseline": None,
        }
    ],
    "summary": {
        "samples": 1,
        "learned": 0,
        "unlearned": 1,
        "learned_share": 0.0,
        "must_learn": 0,
        "must_learn_unlearned": [],
        "fragile": [],
        "invalid": [],
        "causes": {"undiagnosed": 1},
        "criteria": {"exact": 1},
        "weak_causes": {},
    },
    "shard": None,
    "collection_errors": [],
    "gate": {
        "passed": True,
        "verdict": "ilp gate: PASSED — 1 unlearned within budget",
        "strict": False,
        "baseline": None,
        "failed": 0,
        "tolerated": 1,
        "scopes": [
            {
                "scope": "",
                "samples": 1,
                "budgets": {"total": {"share": 1.0}},
                "rows": [
                    {
                        "name": "total",
                        "unlearned": 1,
                        "known": 0,
                        "share": 1.0,
                        "budget": {"share": 1.0},
                        "default_budget": False,
                        "status": "within",
                    }
                ],
            }
        ],
        "must_learn_unlearned": [],
        "invalid": [],
        "known": [],
        "regressions": [],
        "fixed": [],
        "unread": [],
    },
}


REMOVED = object()


def broken(path: str, value: Any) -> dict[str, Any]:
    """REPORT with the field at `path` ("samples.0.learned") set to `value` (or removed)."""
    document = copy.deepcopy(REPORT)
    *parents, last = path.split(".")
    node: Any = document
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is REMOVED:
        del node[last]
    else:
        node[last] = value
    return document


def test_the_schema_is_valid_json_schema_shipped_in_the_package() -> None:
    assert SCHEMA_FILE.parent.name == "report" and SCHEMA_FILE.is_file()
    Draft202012Validator.check_schema(report_schema())
    assert_valid_report(REPORT)
    assert_valid_report({**REPORT, "schema": 1})


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("schema", 3),
        ("schema", REMOVED),
        ("samples", {}),
        ("samples.0.id", REMOVED),
        ("samples.0.id", 7),
        ("samples.0.learned", "yes"),
    ],
)
def test_what_a_baseline_refuses_the_schema_refuses(path: str, value: Any) -> None:
    document = broken(path, value)
    assert not Draft202012Validator(report_schema()).is_valid(document)
    with pytest.raises(BaselineError):
        learned_by_id(document)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("checkpoint", REMOVED),
        ("backend", REMOVED),
        ("fragile_margin", REMOVED),
        ("gate.scopes", "all"),
        ("gate.scopes.0.budgets", None),
        ("gate.scopes.0.scope", REMOVED),
        ("samples.0.learned", REMOVED),
    ],
)
def test_what_merge_refuses_the_schema_refuses(path: str, value: Any) -> None:
    document = broken(path, value)
    assert not Draft202012Validator(report_schema()).is_valid(document)
    with pytest.raises(ReportError):
        parse_report(document)  # what `merge` and `html` read their files with


def test_a_merged_report_follows_the_schema() -> None:
    assert_valid_report(merge_reports([("r.json", parse_report(REPORT))]).to_dict())
