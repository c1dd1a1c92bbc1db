"""A sample's gate outcome does not change with the selection (`-k`, `--lf`): budgets count the
deselected samples whose verdicts the cache holds."""

from __future__ import annotations

import json

import pytest

from pytest_ilp.report.check import parse_report

from conftest import PLANT, write_jsonl
from world import World

pytestmark = pytest.mark.fake_world


@pytest.fixture
def project(pytester: pytest.Pytester, world: World, truth: dict[str, bool]) -> list[str]:
    """Eight samples, two unlearned: knowledge conflicts, 2/8 = 25% of the data (budget 30%).
    Returns the unlearned ids."""
    learned = [r for r in world.raw_records[:100] if truth[r["id"]]][:6]
    unlearned = [r for r in world.raw_records[:100] if not truth[r["id"]]][:2]
    write_jsonl(pytester.path / "data.jsonl", learned + unlearned)
    pytester.makeconftest(PLANT.format(planted={r["id"]: "knowledge_conflict" for r in unlearned}))
    pytester.makeini(
        f"[pytest]\nilp_checkpoint = {world.checkpoint}\nilp_data = data.jsonl\n"
        "ilp_threshold = knowledge_conflict=30%\n"
    )
    return [r["id"] for r in unlearned]


def test_a_sample_tolerated_in_the_full_run_is_tolerated_when_run_alone(
    pytester: pytest.Pytester, project: list[str]
) -> None:
    full = pytester.runpytest("-p", "no:randomly")
    full.assert_outcomes(passed=6, xfailed=2)
    alone = pytester.runpytest("-p", "no:randomly", "-k", project[0], "--ilp-report=alone.json")
    alone.assert_outcomes(xfailed=1, deselected=7)
    assert alone.ret == 0
    alone.stdout.fnmatch_lines(
        [
            "knowledge_conflict*2*25.0%*30%*within",
            "(over 8 samples: 1 selected, and 7 outside the selection whose verdicts the cache*",
            "ilp gate: PASSED*",
        ]
    )
    # The report keeps what it needs to evaluate the gate again, the outside samples included.
    report = json.loads((pytester.path / "alone.json").read_text())
    assert [s["id"] for s in report["samples"]] == [project[0]]
    assert report["gate"]["scopes"][0]["samples"] == 8
    assert len(report["gate"]["scopes"][0]["outside_selection"]) == 7
    regained = parse_report(report).gate
    assert regained is not None and regained.passed


def test_last_failed_keeps_the_full_runs_shares(
    pytester: pytest.Pytester, project: list[str]
) -> None:
    # With a 10% budget both conflicts fail; --lf re-runs them alone and they still fail on
    # the same count over the whole data (2/8), not 2/2.
    first = pytester.runpytest("-p", "no:randomly", "--ilp-threshold=knowledge_conflict=10%")
    first.assert_outcomes(passed=6, failed=2)
    again = pytester.runpytest(
        "-p", "no:randomly", "--lf", "--ilp-threshold=knowledge_conflict=10%"
    )
    again.assert_outcomes(failed=2)  # --lf drops the passed items uncollected, not deselected
    again.stdout.fnmatch_lines(
        ["ilp gate: FAILED — over budget: knowledge_conflict 2/8 (25.0%) > 10%"]
    )


def test_without_the_cache_a_selection_is_all_the_gate_knows(
    pytester: pytest.Pytester, project: list[str]
) -> None:
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=6, xfailed=2)
    alone = pytester.runpytest("-p", "no:randomly", "--ilp-no-cache", "-k", project[0])
    alone.assert_outcomes(failed=1, deselected=7)
    alone.stdout.fnmatch_lines(["ilp gate: FAILED — over budget: knowledge_conflict 1/1*"])
