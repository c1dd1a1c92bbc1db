"""The gate's rules as pure functions: budgets, decisions, the verdict line, shards, merging."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from pytest_ilp.core.gate import (
    FAILED,
    FIXED,
    INVALID,
    KNOWN,
    PASSED,
    REGRESSION,
    TOLERATED,
    GateSample,
    Scope,
    compare_with_baseline,
    evaluate,
    verdict_line,
)
from pytest_ilp.core.shards import Shard
from pytest_ilp.core.thresholds import Threshold, parse_threshold
from pytest_ilp.report.check import ReportError, parse_report
from pytest_ilp.report.merge import MergeError, merge_reports
from pytest_ilp.report.model import Report

# -- budgets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [(0.02, 0.02), (0, 0), (5, 5), ("0.02", 0.02), ("2%", 0.02), ("3", 3), (1.0, 1.0), ("0", 0)],
)
def test_floats_are_shares_and_ints_are_counts(raw: Any, value: float) -> None:
    budget = parse_threshold(raw)
    assert budget.value == value
    assert budget.is_share is isinstance(value, float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (-1, "must not be negative"),
        (-0.1, "must lie between 0 and 1"),
        (1.5, "must lie between 0 and 1 (an integer is a count of samples)"),
        ("150%", "must lie between 0 and 1"),
        (True, "expected a share"),
        ("lots", "expected a share (0.02 or 2%) or a count of samples (5), got 'lots'"),
        (None, "expected a share"),
    ],
)
def test_bad_budgets_say_what_is_expected(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_threshold(raw)


def test_a_share_budget_allows_exactly_its_share_despite_float_rounding() -> None:
    assert Threshold(0.07).allows(7, 100)  # 0.07 * 100 == 7.000000000000001
    assert not Threshold(0.07).allows(8, 100)
    assert Threshold(3).allows(3, 10) and not Threshold(3).allows(4, 10)
    assert str(Threshold(0.015)) == "1.5%" and str(Threshold(2)) == "2"


def test_budgets_round_trip_through_their_json_form() -> None:
    for budget in (Threshold(0.02), Threshold(0), Threshold(0.0), Threshold(7)):
        again = Threshold.from_dict(budget.to_dict())
        assert again == budget and again.is_share is budget.is_share


# -- decisions -----------------------------------------------------------------------------------


def samples(*specs: tuple[str, bool | None, str | None], **flags: Any) -> dict[str, GateSample]:
    made = {}
    for sample_id, learned, cause in specs:
        made[sample_id] = GateSample(
            sample_id,
            learned,
            cause,
            must_learn=sample_id in flags.get("must_learn", ()),
            baseline=flags.get("baseline", {}).get(sample_id),
        )
    return made


def run_of(n_learned: int, causes: list[str]) -> dict[str, GateSample]:
    specs: list[tuple[str, bool | None, str | None]] = [
        (f"ok{i}", True, None) for i in range(n_learned)
    ]
    specs += [(f"bad{i}", False, cause) for i, cause in enumerate(causes)]
    return samples(*specs)


def one_scope(found: dict[str, GateSample], **budgets: Any) -> list[Scope]:
    parsed = {name: parse_threshold(value) for name, value in budgets.items()}
    return [Scope("", parsed, tuple(found))]


def test_without_budgets_every_unlearned_sample_fails() -> None:
    found = run_of(8, ["knowledge_conflict", "undiagnosed"])
    gate = evaluate(found, one_scope(found))
    assert [gate.decision(i).outcome for i in found] == [PASSED] * 8 + [FAILED] * 2
    assert not gate.passed
    assert verdict_line(gate) == (
        "ilp gate: FAILED — over budget: knowledge_conflict 1/10 (10.0%) > 0 (default), "
        "undiagnosed 1/10 (10.0%) > 0 (default)"
    )


def test_a_cause_within_its_budget_is_tolerated_with_count_and_budget_in_the_reason() -> None:
    found = run_of(197, ["knowledge_conflict"] * 3)
    gate = evaluate(found, one_scope(found, knowledge_conflict=0.02))
    decision = gate.decision("bad0")
    assert decision.outcome == TOLERATED
    assert decision.reason == "knowledge_conflict: 3 of 200 unlearned (1.5%), budget 2%"
    assert gate.passed
    assert verdict_line(gate) == "ilp gate: PASSED — 3 unlearned within budget"


def test_a_cause_over_its_budget_fails_its_samples_only() -> None:
    found = run_of(193, ["knowledge_conflict"] * 5 + ["data_inconsistency"] * 2)
    gate = evaluate(found, one_scope(found, knowledge_conflict=0.02, data_inconsistency=2))
    outcomes = {i: gate.decision(i).outcome for i in found if i.startswith("bad")}
    assert [outcomes[f"bad{i}"] for i in range(7)] == [FAILED] * 5 + [TOLERATED] * 2
    assert gate.decision("bad0").reason == (
        "over budget: knowledge_conflict: 5 of 200 unlearned (2.5%), budget 2%"
    )
    assert verdict_line(gate) == (
        "ilp gate: FAILED — over budget: knowledge_conflict 5/200 (2.5%) > 2%"
    )


def test_total_alone_bounds_every_cause_and_both_must_hold_when_a_cause_has_its_own() -> None:
    found = run_of(90, ["undiagnosed"] * 6 + ["knowledge_conflict"] * 4)
    within = evaluate(found, one_scope(found, total=0.1))
    assert within.passed and within.count(TOLERATED) == 10
    over_total = evaluate(found, one_scope(found, total=9, knowledge_conflict=10))
    assert over_total.count(FAILED) == 10
    assert "total 10/100 (10.0%) > 9" in verdict_line(over_total)
    cause_over = evaluate(found, one_scope(found, total=0.5, knowledge_conflict=3))
    assert cause_over.decision("bad6").outcome == FAILED  # knowledge_conflict 4 > 3
    assert cause_over.decision("bad0").outcome == TOLERATED  # undiagnosed: total only


def test_must_learn_fails_whatever_the_budget_and_strict_fails_everything() -> None:
    found = samples(
        ("a", True, None),
        ("b", False, "undiagnosed"),
        ("c", False, "undiagnosed"),
        must_learn={"b"},
    )
    gate = evaluate(found, one_scope(found, total=1.0))
    assert gate.decision("b").outcome == FAILED and gate.decision("c").outcome == TOLERATED
    assert gate.decision("b").reason == "must-learn sample not learned"
    assert verdict_line(gate) == "ilp gate: FAILED — must-learn not learned: 1"
    strict = evaluate(found, one_scope(found, total=1.0), strict=True)
    assert strict.count(FAILED) == 2
    assert verdict_line(strict) == (
        "ilp gate: FAILED — must-learn not learned: 1; --ilp-strict: 1 unlearned"
    )


def test_known_failures_are_tolerated_and_not_counted_regressions_have_their_budget() -> None:
    found = samples(
        ("known", False, "knowledge_conflict"),
        ("regressed", False, "knowledge_conflict"),
        ("new", False, "knowledge_conflict"),
        ("fixed", True, None),
        ("ok", True, None),
        baseline={"known": KNOWN, "regressed": REGRESSION, "fixed": FIXED},
    )
    gate = evaluate(found, one_scope(found, knowledge_conflict=2, regressions=0), baseline="b.json")
    assert gate.decision("known").outcome == TOLERATED
    assert (
        gate.decision("known").reason == "known: unlearned in the baseline too (knowledge_conflict)"
    )
    assert gate.decision("regressed").outcome == FAILED
    assert gate.decision("new").outcome == TOLERATED  # not in the baseline: budgets decide
    row = gate.row("", "knowledge_conflict")
    assert row is not None and (row.count, row.known) == (2, 1)
    assert (gate.known, gate.regressions, gate.fixed) == (("known",), ("regressed",), ("fixed",))
    assert verdict_line(gate) == "ilp gate: FAILED — over budget: regressions 1/5 (20.0%) > 0"


def test_baseline_comparison() -> None:
    assert compare_with_baseline(False, False) == KNOWN
    assert compare_with_baseline(False, True) == REGRESSION
    assert compare_with_baseline(True, False) == FIXED
    assert compare_with_baseline(True, True) is None
    assert compare_with_baseline(None, False) is None


def test_an_invalid_sample_fails_the_gate() -> None:
    found = samples(("a", True, None), ("broken", None, None))
    gate = evaluate(found, one_scope(found))
    assert gate.decision("broken").outcome == INVALID
    assert verdict_line(gate) == "ilp gate: FAILED — invalid samples: 1"


def test_each_scope_counts_its_own_samples_and_the_verdict_names_the_scope() -> None:
    found = run_of(8, ["knowledge_conflict", "knowledge_conflict", "undiagnosed"])
    scopes = [
        Scope("", {"knowledge_conflict": Threshold(0.5)}, ("ok0", "ok1", "bad0", "bad2")),
        Scope("test_x.py", {"knowledge_conflict": Threshold(0.1)}, ("ok2", "ok3", "bad1", "bad2")),
    ]
    gate = evaluate(found, scopes)
    assert gate.decision("bad0").outcome == TOLERATED
    assert gate.decision("bad1").outcome == FAILED
    assert gate.decision("bad2", "").outcome == FAILED  # undiagnosed has no budget anywhere
    assert verdict_line(gate) == (
        "ilp gate: FAILED — over budget: undiagnosed 1/4 (25.0%) > 0 (default); "
        "test_x.py: knowledge_conflict 1/4 (25.0%) > 10%, undiagnosed 1/4 (25.0%) > 0 (default)"
    )


# -- shards --------------------------------------------------------------------------------------


def test_shards_partition_the_ids_evenly_whatever_their_order() -> None:
    ids = [f"sample-{i}" for i in range(2000)]
    shards = [Shard(i, 4) for i in range(1, 5)]
    owners = {i: [s for s in shards if s.holds(i)] for i in ids}
    assert all(len(found) == 1 for found in owners.values())
    sizes = [sum(1 for i in ids if s.holds(i)) for s in shards]
    assert all(400 < size < 600 for size in sizes), sizes
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    assert {i for i in shuffled if shards[0].holds(i)} == {i for i in ids if shards[0].holds(i)}


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3", "-1/2"])
def test_bad_shard_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"I/N|between 1 and N"):
        Shard.parse(text)


# -- merging shard reports -----------------------------------------------------------------------


#: a report's summary as the schema wants it (readers compute the summary from the records).
SUMMARY = {
    "samples": 0,
    "learned": 0,
    "unlearned": 0,
    "must_learn": 0,
    "must_learn_unlearned": [],
    "fragile": [],
    "invalid": [],
}


def merge(*reports: tuple[str, dict[str, Any]]) -> Report:
    """`merge_reports` on documents, each checked and parsed as `merge` reads its files."""
    return merge_reports([(name, parse_report(document)) for name, document in reports])


def shard_report(
    shard: str | None, records: list[dict[str, Any]], **budgets: Any
) -> dict[str, Any]:
    return {
        "schema": 1,
        "checkpoint": "/ckpt",
        "backend": "hf cpu float32",
        "fragile_margin": 0.1,
        "shard": shard,
        "samples": records,
        "summary": SUMMARY,
        "gate": {
            "strict": False,
            "baseline": None,
            "scopes": [
                {
                    "scope": "",
                    "budgets": {k: parse_threshold(v).to_dict() for k, v in budgets.items()},
                }
            ],
        },
    }


def record(
    sample_id: str, learned: bool, cause: str | None = None, line: int = 1
) -> dict[str, Any]:
    return {
        "id": sample_id,
        "source": f"data.jsonl:{line}",
        "learned": learned,
        "cause": cause,
        "must_learn": False,
        "fragile": False,
        "error": None,
        "baseline": None,
        "gate_scopes": [""],
    }


def test_merge_evaluates_the_budgets_on_the_whole() -> None:
    # Each shard alone: 1 of 2 unlearned (50%) is over a 30% budget; the whole: 2 of 8 (25%).
    one = shard_report(
        "1/2", [record("a", True, line=1), record("b", False, "undiagnosed", 2)], undiagnosed=0.3
    )
    two = shard_report(
        "2/2",
        [record(x, True, line=n) for n, x in enumerate("cdefg", start=3)]
        + [record("h", False, "undiagnosed", 9)],
        undiagnosed=0.3,
    )
    merged = merge(("two.json", two), ("one.json", one)).to_dict()
    assert [s["id"] for s in merged["samples"]] == list("abcdefgh")  # data order again
    assert merged["summary"]["samples"] == 8 and merged["summary"]["unlearned"] == 2
    assert merged["gate"]["passed"] is True
    assert {s["id"]: s["gate"] for s in merged["samples"]}["b"] == TOLERATED
    gate = parse_report(merged).gate
    assert gate is not None and gate.passed


@pytest.mark.parametrize(
    ("reports", "message"),
    [
        ([("1.json", "1/3"), ("2.json", "2/3")], "shard 3/3 missing"),
        ([("1.json", "1/2"), ("again.json", "1/2")], "shard 1/2 given more than once"),
        ([("1.json", "1/2"), ("2.json", "2/3")], "shards of different splits"),
        ([("1.json", "1/2"), ("all.json", None)], "all.json: not a shard report"),
    ],
)
def test_merge_refuses_an_incomplete_or_mixed_set_of_shards(
    reports: list[tuple[str, str | None]], message: str
) -> None:
    documents = [
        (name, shard_report(shard, [record(f"{name}-s", True)])) for name, shard in reports
    ]
    with pytest.raises(MergeError, match=message):
        merge(*documents)


def test_merge_refuses_different_budgets_and_overlapping_samples() -> None:
    one = shard_report("1/2", [record("a", True)], total=0.1)
    two = shard_report("2/2", [record("b", True)], total=0.2)
    with pytest.raises(MergeError, match="different budgets for the run"):
        merge(("1.json", one), ("2.json", two))
    same = shard_report("2/2", [record("a", True)], total=0.1)
    with pytest.raises(MergeError, match=re.escape("sample 'a' is in both 1.json and 2.json")):
        merge(("1.json", one), ("2.json", same))
    with pytest.raises(
        ReportError, match="report schema 3, but this pytest-ilp reads schemas 1, 2"
    ):
        merge(("1.json", {**one, "schema": 3}))


def _without(document: dict[str, Any], *path: str) -> dict[str, Any]:
    """A deep copy of a report with the field at `path` removed."""
    import copy

    copied = copy.deepcopy(document)
    parent: Any = copied
    for key in path[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    del parent[path[-1]]
    return copied


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("checkpoint",), "1.json: not a whole pytest-ilp report (no checkpoint)"),
        (("gate", "scopes"), "1.json: `gate.scopes` must be a list of {scope, budgets} records"),
        (("samples", "0", "learned"), "1.json: samples[0] (a): `learned` must be true"),
    ],
)
def test_merge_cli_says_what_a_truncated_report_lacks(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], path: tuple[str, ...], message: str
) -> None:
    from pytest_ilp.__main__ import main

    report = _without(shard_report(None, [record("a", True)]), *path)
    (tmp_path / "1.json").write_text(json.dumps(report))
    status = main(["merge", str(tmp_path / "1.json"), "-o", str(tmp_path / "all.json")])
    assert status == 4
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_reports_are_strict_json_with_null_for_non_finite_numbers() -> None:
    from pytest_ilp.report.records import json_text

    text = json_text({"nll": float("nan"), "figures": {"margin": float("-inf")}, "ok": [1.5]})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}")) == {
        "nll": None,
        "figures": {"margin": None},
        "ok": [1.5],
    }
