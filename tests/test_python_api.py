"""Samples in Python tests (`ilp_sample`, `ilp_verdict`, `assert_learned`) and must-learn."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import write_jsonl
from world import World

pytestmark = pytest.mark.fake_world


@pytest.fixture
def mixed(world: World, truth: dict[str, bool]) -> list[dict[str, Any]]:
    learned = [r for r in world.raw_records[:100] if truth[r["id"]]][:2]
    unlearned = [r for r in world.raw_records[:100] if not truth[r["id"]]][:2]
    return learned + unlearned


def ilp(pytester: pytest.Pytester, world: World, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--ilp-checkpoint={world.checkpoint}", *args)


def test_ilp_dataset_parametrizes_a_test_over_its_samples(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]], truth: dict[str, bool]
) -> None:
    (pytester.path / "data").mkdir()
    write_jsonl(pytester.path / "data" / "sft.jsonl", mixed)
    pytester.makepyfile(
        test_model="""
        import pytest
        import pytest_ilp

        @pytest.mark.ilp_dataset("data/sft.jsonl")
        def test_reproduces(ilp_sample):
            pytest_ilp.assert_learned(ilp_sample)
        """
    )
    result = ilp(pytester, world, "-rA")
    for record in mixed:
        outcome = "PASSED" if truth[record["id"]] else "FAILED"
        result.stdout.fnmatch_lines(
            [f"{outcome} test_model.py::test_reproduces[[]{record['id']}]*"]
        )
    # The failure text is pytest-ilp's report, not an assertion traceback.
    unlearned = next(r for r in mixed if not truth[r["id"]])
    result.stdout.fnmatch_lines([f"sample {unlearned['id']} (data/sft.jsonl:*) was not learned"])
    assert "def test_reproduces" not in result.stdout.str()


def test_ilp_verdict_gives_the_figures_to_custom_checks(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]], truth: dict[str, bool]
) -> None:
    write_jsonl(pytester.path / "sft.jsonl", mixed)
    pytester.makepyfile(
        test_model="""
        import pytest
        import pytest_ilp

        @pytest.mark.ilp_dataset("sft.jsonl")
        def test_learned_with_room(ilp_sample, ilp_verdict):
            assert ilp_verdict.sample_id == ilp_sample.id
            if ilp_verdict.learned:
                assert ilp_verdict.token_accuracy == 1.0 and ilp_verdict.margin > 0
                assert pytest_ilp.assert_learned(ilp_verdict) is ilp_verdict
            else:
                assert ilp_verdict.first_divergence is not None
                assert ilp_verdict.produced is not None
                with pytest.raises(pytest_ilp.NotLearned):
                    pytest_ilp.assert_learned(ilp_sample)
        """
    )
    ilp(pytester, world).assert_outcomes(passed=4)


def test_configured_data_parametrizes_tests_without_a_marker(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "sft.jsonl", mixed)
    pytester.makepyfile(test_model="def test_sample(ilp_sample):\n    assert ilp_sample.target\n")
    result = ilp(pytester, world, "--ilp-data=sft.jsonl", "test_model.py", "-q", "--co")
    result.stdout.fnmatch_lines([f"test_model.py::test_sample[[]{r['id']}]" for r in mixed])


def test_must_learn_from_record_yaml_tags_and_marker(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]], truth: dict[str, bool]
) -> None:
    unlearned = [r for r in mixed if not truth[r["id"]]]
    records = [
        {**unlearned[0], "must_learn": True},
        {**unlearned[1], "tags": ["safety"]},
        *[r for r in mixed if truth[r["id"]]],
    ]
    write_jsonl(pytester.path / "sft.jsonl", records)
    write_jsonl(pytester.path / "more.jsonl", [world.raw_records[60]])
    (pytester.path / "ilp.yaml").write_text(
        f"checkpoint: {world.checkpoint}\ndata: sft.jsonl\nreport: report.json\n"
        "must_learn: {tags: [safety]}\n"
    )
    pytester.makepyfile(
        test_more="""
        import pytest
        import pytest_ilp

        @pytest.mark.must_learn
        @pytest.mark.ilp_dataset("more.jsonl")
        def test_critical(ilp_sample):
            pytest_ilp.assert_learned(ilp_sample)
        """
    )
    result = pytester.runpytest("-m", "must_learn", "-rA")
    ids = [unlearned[0]["id"], unlearned[1]["id"], world.raw_records[60]["id"]]
    result.stdout.fnmatch_lines([f"sample {i} (*) was not learned [[]must-learn]" for i in ids[:2]])
    report = json.loads((pytester.path / "report.json").read_text())
    assert [s["id"] for s in report["samples"]] == ids
    assert all(s["must_learn"] for s in report["samples"])
    summary = report["summary"]
    assert summary["must_learn"] == 3
    assert set(summary["must_learn_unlearned"]) >= set(ids[:2])
    result.stdout.fnmatch_lines(["must-learn samples not learned: *"])


def test_items_carry_the_ilp_marker(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "sft.jsonl", mixed)
    pytester.makepyfile(test_plain="def test_other():\n    pass\n")
    result = ilp(pytester, world, "--ilp-data=sft.jsonl", "-m", "not ilp")
    result.assert_outcomes(passed=1)
    assert "ilp: scoring" not in result.stdout.str()


def test_assert_learned_outside_a_run_says_how_to_use_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        import pytest
        import pytest_ilp
        from pytest_ilp.core.samples import sample_from_record
        from pathlib import Path

        def test_x():
            sample = sample_from_record({"prompt": "a", "completion": "b"}, Path("d.jsonl"), 1)
            with pytest.raises(RuntimeError, match="works inside a test run with --ilp-checkpoint"):
                pytest_ilp.assert_learned(sample)
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_assert_learned_on_a_sample_the_run_did_not_score_says_so(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "sft.jsonl", mixed[:1])
    apart = next(r for r in world.raw_records if r["id"] != mixed[0]["id"])
    write_jsonl(pytester.path / "apart.jsonl", [apart])
    pytester.makepyfile(
        test_apart="""
        import pytest_ilp
        from pytest_ilp.api import read_samples

        def test_apart():
            pytest_ilp.assert_learned(read_samples("apart.jsonl")[0])
        """
    )
    result = ilp(pytester, world, "--ilp-data=sft.jsonl", "test_apart.py", "sft.jsonl")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["*it was not scored in this run: pass assert_learned the `ilp_sample` of a test*"]
    )
    assert "KeyError" not in result.stdout.str()
