"""The CI gate end to end: real pytest runs on the fake world (verdicts from a table).

The causes are planted by a conftest `pytest_ilp_diagnose` hook, so every test knows them
without a base model: of the six unlearned samples, three are knowledge_conflict, two
data_inconsistency and one missing_knowledge, out of twelve samples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.core.thresholds import Threshold
from pytest_ilp.session import STATE_KEY

from conftest import PLANT, assert_round_trip, write_jsonl
from world import World

pytestmark = pytest.mark.fake_world

CAUSES = ["knowledge_conflict"] * 3 + ["data_inconsistency"] * 2 + ["missing_knowledge"]
#: budgets under which every planted cause is within budget (3/12, 2/12 and 1/12 unlearned).
WITHIN = (
    "--ilp-threshold=knowledge_conflict=0.25",
    "--ilp-threshold=data_inconsistency=2",
    "--ilp-threshold=missing_knowledge=10%",
)


@dataclass(frozen=True)
class Planted:
    records: list[dict[str, Any]]
    causes: dict[str, str]

    def of(self, cause: str) -> list[str]:
        return [i for i, c in self.causes.items() if c == cause]

    @property
    def learned(self) -> list[str]:
        return [r["id"] for r in self.records if r["id"] not in self.causes]


@pytest.fixture(scope="module")
def planted(world: World, truth: dict[str, bool]) -> Planted:
    """Six learned and six unlearned raw records, interleaved, and the unlearned ones' causes."""
    learned = [r for r in world.raw_records[:100] if truth[r["id"]]][:6]
    unlearned = [r for r in world.raw_records[:100] if not truth[r["id"]]][:6]
    records = [r for pair in zip(learned, unlearned) for r in pair]
    return Planted(records, {r["id"]: cause for r, cause in zip(unlearned, CAUSES)})


def setup(
    pytester: pytest.Pytester, planted: Planted, records: list[dict[str, Any]] | None = None
) -> None:
    write_jsonl(pytester.path / "data.jsonl", planted.records if records is None else records)
    pytester.makeconftest(PLANT.format(planted=planted.causes))


def ilp(pytester: pytest.Pytester, world: World, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        f"--ilp-checkpoint={world.checkpoint}", "--ilp-data=data.jsonl", *args
    )


def ilp_section(result: pytest.RunResult) -> list[str]:
    """The pytest-ilp part of the terminal summary, without its timing line."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "= pytest-ilp =" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("ilp gate:"))
    return [line for line in lines[start : end + 1] if not line.startswith("scored ")]


# -- budgets -----------------------------------------------------------------------------------


def test_unlearned_samples_within_budget_xfail_naming_cause_count_and_budget(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    # Imperative xfails: a tolerated sample stays xfailed even under xfail_strict.
    result = ilp(pytester, world, *WITHIN, "-rx", "-o", "xfail_strict=true")
    result.assert_outcomes(passed=6, xfailed=6)
    assert result.ret == pytest.ExitCode.OK
    conflict, inconsistent, missing = (
        planted.of(c)[0] for c in ("knowledge_conflict", "data_inconsistency", "missing_knowledge")
    )
    result.stdout.fnmatch_lines_random(
        [
            f"XFAIL data.jsonl::{conflict} - knowledge_conflict: 3 of 12 unlearned (25.0%), "
            "budget 25%",
            f"XFAIL data.jsonl::{inconsistent} - data_inconsistency: 2 of 12 unlearned (16.7%), "
            "budget 2",
            f"XFAIL data.jsonl::{missing} - missing_knowledge: 1 of 12 unlearned (8.3%), "
            "budget 10%",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "cause * unlearned * share * budget * status",
            "missing_knowledge * 1 * 8.3% * 10% * within",
            "knowledge_conflict * 3 * 25.0% * 25% * within",
            "data_inconsistency * 2 * 16.7% * 2 * within",
            "total * 6 * 50.0% * - * -",
        ]
    )
    assert ilp_section(result)[-1] == "ilp gate: PASSED — 6 unlearned within budget"


def test_a_cause_over_budget_fails_its_samples_and_the_verdict_line_names_the_budget(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    result = ilp(pytester, world, "--ilp-threshold=knowledge_conflict=0.2", *WITHIN[1:], "-rfx")
    result.assert_outcomes(passed=6, failed=3, xfailed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    for sample_id in planted.of("knowledge_conflict"):
        result.stdout.fnmatch_lines([f"FAILED data.jsonl::{sample_id} - *"])
    result.stdout.fnmatch_lines(
        [
            "  cause:     knowledge_conflict: planted by the test",
            "  fix:       fix the knowledge_conflict",
            "  gate:      over budget: knowledge_conflict: 3 of 12 unlearned (25.0%), budget 20%",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "knowledge_conflict * 3 * 25.0% * 20% * over",
            "ilp gate: FAILED — over budget: knowledge_conflict 3/12 (25.0%) > 20%",
        ]
    )


def test_total_bounds_the_causes_that_have_no_budget_of_their_own(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    result = ilp(pytester, world, "--ilp-threshold=total=5", "--ilp-threshold=missing_knowledge=1")
    result.assert_outcomes(passed=6, failed=6)
    result.stdout.fnmatch_lines(
        [
            "knowledge_conflict * 3 * 25.0% * - * (total)",
            "total * 6 * 50.0% * 5 * over",
            "ilp gate: FAILED — over budget: total 6/12 (50.0%) > 5",
        ]
    )


def test_must_learn_samples_fail_whatever_the_budget(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    must = planted.of("data_inconsistency")[0]
    records = [{**r, "must_learn": True} if r["id"] == must else r for r in planted.records]
    setup(pytester, planted, records)
    result = ilp(pytester, world, "--ilp-threshold=total=1.0")
    result.assert_outcomes(passed=6, failed=1, xfailed=5)
    result.stdout.fnmatch_lines(
        [
            f"sample {must} (data.jsonl:*) was not learned [[]must-learn]",
            "  gate:      must-learn sample not learned",
        ]
    )
    result.stdout.fnmatch_lines(["ilp gate: FAILED — must-learn not learned: 1"])


@pytest.mark.parametrize("flag", ["--ilp-strict", "--runxfail"])
def test_strict_fails_every_unlearned_sample(
    pytester: pytest.Pytester, world: World, planted: Planted, flag: str
) -> None:
    setup(pytester, planted)
    result = ilp(pytester, world, "--ilp-threshold=total=1.0", flag)
    result.assert_outcomes(passed=6, failed=6)
    result.stdout.fnmatch_lines(["ilp gate: FAILED — --ilp-strict: 6 unlearned"])


def test_a_marker_wins_over_the_command_line_for_the_samples_of_what_it_decorates(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    pytester.makepyfile(
        test_marked="""
        import pytest
        import pytest_ilp

        pytestmark = pytest.mark.ilp_threshold(knowledge_conflict=3)

        @pytest.mark.ilp_dataset("data.jsonl")
        def test_reproduces(ilp_sample):
            pytest_ilp.assert_learned(ilp_sample)
        """,
        test_unmarked="""
        import pytest
        import pytest_ilp

        @pytest.mark.ilp_dataset("data.jsonl")
        def test_reproduces(ilp_verdict):
            pytest_ilp.assert_learned(ilp_verdict)
        """,
    )
    result = pytester.runpytest(
        f"--ilp-checkpoint={world.checkpoint}",
        "--ilp-threshold=knowledge_conflict=0",
        *WITHIN[1:],
        "-rfx",
        "test_marked.py",
        "test_unmarked.py",
    )
    result.assert_outcomes(passed=12, xfailed=9, failed=3)
    conflict = planted.of("knowledge_conflict")[0]
    result.stdout.fnmatch_lines(
        [
            f"FAILED test_unmarked.py::test_reproduces[[]{conflict}] - *",
            f"XFAIL test_marked.py::test_reproduces[[]{conflict}] - knowledge_conflict: 3 of 12 "
            "unlearned (25.0%), budget 3",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "budgets of the run:",
            "knowledge_conflict * 3 * 25.0% * 0 * over",
            "budgets of test_marked.py:",
            "knowledge_conflict * 3 * 25.0% * 3 * within",
            "ilp gate: FAILED — over budget: knowledge_conflict 3/12 (25.0%) > 0",
        ]
    )


def test_run_budgets_merge_name_by_name_command_line_over_ilp_yaml_over_ini(
    pytester: pytest.Pytester, world: World
) -> None:
    write_jsonl(pytester.path / "sft.jsonl", [{"prompt": "Q", "completion": " A"}])
    pytester.makeini(
        f"[pytest]\nilp_checkpoint = {world.checkpoint}\n"
        "ilp_threshold = knowledge_conflict=0.05 total=50% missing_knowledge=3\nilp_strict = true\n"
    )
    (pytester.path / "ilp.yaml").write_text(
        "thresholds: {knowledge_conflict: 0.03, data_inconsistency: 0, total: 0.4}\n"
    )
    config = pytester.parseconfigure("--ilp-threshold", "knowledge_conflict=2%")
    settings = config.stash[STATE_KEY].settings
    assert settings.thresholds == {
        "knowledge_conflict": Threshold(0.02),  # command line
        "data_inconsistency": Threshold(0),  # ilp.yaml
        "total": Threshold(0.4),  # ilp.yaml over ini
        "missing_knowledge": Threshold(3),  # ini
    }
    assert settings.strict is True


def test_causes_declared_by_a_conftest_are_budget_names(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    causes = dict.fromkeys(planted.causes, "arithmetic")
    setup(pytester, Planted(planted.records, causes))
    with (pytester.path / "conftest.py").open("a") as conftest:
        conftest.write("\n\ndef pytest_ilp_causes():\n    return ['arithmetic']\n")
    result = ilp(pytester, world, "--ilp-threshold=arithmetic=0.5")
    result.assert_outcomes(passed=6, xfailed=6)
    result.stdout.fnmatch_lines(["arithmetic  *6*50.0%*50%*within"])


def test_a_failed_gate_never_exits_zero_even_when_no_test_checked_its_sample(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    pytester.makepyfile(
        test_lax="""
        import pytest

        @pytest.mark.ilp_dataset("data.jsonl")
        def test_only_looks(ilp_verdict):
            assert ilp_verdict.nll >= 0
        """
    )
    result = pytester.runpytest(f"--ilp-checkpoint={world.checkpoint}", "test_lax.py")
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["ilp gate: FAILED — over budget: *"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


# -- bad input -----------------------------------------------------------------------------------

VALID = (
    "missing_knowledge, knowledge_conflict, data_inconsistency, forgetting, under_optimization, "
    "undiagnosed, total, regressions"
)


@pytest.mark.parametrize(
    ("args", "yaml", "message"),
    [
        (
            ["--ilp-threshold=knowlege_conflict=0.02"],
            "",
            f"*unknown cause(s) knowlege_conflict; budgets may name {VALID} *pytest_ilp_causes*",
        ),
        (
            ["--ilp-threshold=total=-1"],
            "",
            "--ilp-threshold: total: a count of samples must not be negative*",
        ),
        (
            [],
            "thresholds: {knowledge_conflict: 1.5}\n",
            "*ilp.yaml: thresholds: knowledge_conflict: a share must lie between 0 and 1 "
            "(an integer is a count of samples), got 1.5",
        ),
        (
            [],
            "thresholds: [0.1]\n",
            "*ilp.yaml: thresholds: expected a mapping of cause to budget*",
        ),
        (["--ilp-threshold=0.02"], "", "--ilp-threshold: expected CAUSE=BUDGET such as *"),
        (["--ilp-shard=3/2"], "", "--ilp-shard: the shard number must lie between 1 and N*"),
        (["--ilp-update-baseline"], "", "--ilp-update-baseline needs --ilp-baseline=PATH*"),
    ],
)
def test_bad_budget_and_gate_options_are_usage_errors(
    pytester: pytest.Pytester, world: World, args: list[str], yaml: str, message: str
) -> None:
    write_jsonl(pytester.path / "data.jsonl", [{"prompt": "Q", "completion": " A"}])
    if yaml:
        (pytester.path / "ilp.yaml").write_text(yaml)
    result = ilp(pytester, world, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            "ilp_threshold(knowlege_conflict=0.02)",
            f"*unknown cause(s) knowlege_conflict; budgets may name {VALID}*",
        ),
        (
            "ilp_threshold(0.02)",
            "*budgets are keyword arguments, e.g. ilp_threshold(knowledge_conflict=0.02*",
        ),
        (
            "ilp_threshold(total=2.0)",
            "*test_marker.py::test_reproduces: total: a share must lie between 0 and 1*",
        ),
    ],
)
def test_a_bad_marker_is_a_collection_error_of_its_test(
    pytester: pytest.Pytester, world: World, marker: str, message: str
) -> None:
    write_jsonl(pytester.path / "data.jsonl", [{"prompt": "Q", "completion": " A"}])
    pytester.makepyfile(
        test_marker=f"""
        import pytest

        @pytest.mark.{marker}
        @pytest.mark.ilp_dataset("data.jsonl")
        def test_reproduces(ilp_sample):
            pass
        """
    )
    result = pytester.runpytest(f"--ilp-checkpoint={world.checkpoint}")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting test_marker.py*", message])
    assert "ilp: scoring" not in result.stdout.str()


# -- baselines -----------------------------------------------------------------------------------


def test_a_baseline_tells_known_failures_regressions_and_fixed_samples(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    ilp(pytester, world, "--ilp-report=base.json")
    baseline = json.loads((pytester.path / "base.json").read_text())
    regressed, fixed = planted.of("knowledge_conflict")[0], planted.learned[0]
    for sample in baseline["samples"]:
        if sample["id"] in (regressed, fixed):
            sample["learned"] = not sample["learned"]
    (pytester.path / "base.json").write_text(json.dumps(baseline))

    result = ilp(
        pytester,
        world,
        "--ilp-baseline=base.json",
        "--ilp-threshold=regressions=0",
        "-rfx",
        "--ilp-report=now.json",
    )
    result.assert_outcomes(passed=6, failed=1, xfailed=5)
    result.stdout.fnmatch_lines([f"FAILED data.jsonl::{regressed} - *"])
    known = next(i for i in planted.causes if i != regressed)
    result.stdout.fnmatch_lines(
        [
            f"XFAIL data.jsonl::{known} - known: unlearned in the baseline too "
            f"({planted.causes[known]})"
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "cause * unlearned * known * share * budget * status",
            "knowledge_conflict * 1 * 2 * 8.3% * 0 (default) * over",
            "regressions * 1 * 0 * 8.3% * 0 * over",
            "baseline base.json: 5 known, 1 regressed, 1 fixed",
            f"regressions (learned in the baseline, not now): {regressed}",
            f"fixed (unlearned in the baseline, learned now): {fixed}",
            "known (unlearned in the baseline too, tolerated): *",
            "ilp gate: FAILED — over budget: knowledge_conflict 1/12 (8.3%) > 0 (default), "
            "regressions 1/12 (8.3%) > 0",
        ]
    )
    report = json.loads((pytester.path / "now.json").read_text())
    states = {s["id"]: s["baseline"] for s in report["samples"]}
    assert states[regressed] == "regression" and states[fixed] == "fixed"
    assert sorted(i for i, s in states.items() if s == "known") == sorted(
        set(planted.causes) - {regressed}
    )
    assert report["gate"]["regressions"] == [regressed] and report["gate"]["fixed"] == [fixed]
    assert_round_trip(pytester.path / "now.json")


def test_update_baseline_writes_the_report_and_the_next_run_knows_its_failures(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    first = ilp(pytester, world, "--ilp-baseline=ci/baseline.json", "--ilp-update-baseline")
    # No budgets: every unlearned sample fails, and the run is still gated as usual.
    first.assert_outcomes(passed=6, failed=6)
    first.stdout.fnmatch_lines(
        [
            "ilp gate: FAILED — over budget: missing_knowledge 1/12 (8.3%) > 0 (default), "
            "knowledge_conflict 3/12 (25.0%) > 0 (default), data_inconsistency 2/12 (16.7%) > 0 "
            "(default)"
        ]
    )
    written = json.loads((pytester.path / "ci" / "baseline.json").read_text())
    assert written["schema"] == 2 and len(written["samples"]) == 12
    assert_round_trip(pytester.path / "ci" / "baseline.json")
    second = ilp(pytester, world, "--ilp-baseline=ci/baseline.json")
    second.assert_outcomes(passed=6, xfailed=6)
    second.stdout.fnmatch_lines(["ilp gate: PASSED — 6 known from the baseline"])
    assert second.ret == pytest.ExitCode.OK


def test_updating_the_baseline_from_part_of_the_data_keeps_the_other_samples(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    ilp(pytester, world, "--ilp-baseline=b.json", "--ilp-update-baseline")
    first = json.loads((pytester.path / "b.json").read_text())
    checked = planted.of("knowledge_conflict")[0]
    flipped = {**first, "samples": [dict(s) for s in first["samples"]]}
    for sample in flipped["samples"]:
        sample["learned"] = True  # so that the update below shows which records it replaced
    (pytester.path / "b.json").write_text(json.dumps(flipped))

    partial = ilp(
        pytester, world, f"data.jsonl::{checked}", "--ilp-baseline=b.json", "--ilp-update-baseline"
    )
    partial.assert_outcomes(failed=1)
    updated = {
        s["id"]: s["learned"] for s in json.loads((pytester.path / "b.json").read_text())["samples"]
    }
    assert len(updated) == 12
    assert updated[checked] is False
    assert all(updated[i] for i in updated if i != checked)


def test_an_interrupted_run_writes_no_report_and_keeps_the_baseline(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    (pytester.path / "b.json").write_text(whole_report([]))
    pytester.makepyfile(test_broken="import no_such_module_anywhere\n")
    result = ilp(
        pytester, world, "--ilp-baseline=b.json", "--ilp-update-baseline", "--ilp-report=r.json"
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert (pytester.path / "b.json").read_text() == whole_report([])
    assert not (pytester.path / "r.json").exists()


def whole_report(samples: list[dict[str, Any]]) -> str:
    """A schema-1 report of these sample records, whole but for them."""
    summary = dict.fromkeys(("samples", "learned", "unlearned", "must_learn"), 0)
    lists: dict[str, list[str]] = {k: [] for k in ("must_learn_unlearned", "fragile", "invalid")}
    return json.dumps(
        {
            "schema": 1,
            "checkpoint": "ckpt",
            "backend": "hf cpu float32",
            "fragile_margin": 0.1,
            "samples": samples,
            "summary": {**summary, **lists},
        }
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--ilp-baseline: */old.json does not exist; create it with --ilp-update-baseline*"),
        (
            "{not json",
            "--ilp-baseline */old.json: not a JSON report (*); "
            "regenerate it with --ilp-update-baseline",
        ),
        (
            '{"schema": 3, "samples": []}',
            "--ilp-baseline */old.json: report schema 3, but this pytest-ilp reads schemas "
            "1, 2 (it writes 2): regenerate it with --ilp-update-baseline",
        ),
        ('{"samples": []}', "*not a pytest-ilp report (no `schema` field at the top level)"),
        (whole_report([{"learned": True}]), "*samples[[]0]: `id` must be a string"),
        (
            whole_report([{"id": "a", "learned": "yes"}]),
            "*samples[[]0] (a): `learned` must be true, false or null",
        ),
        ('{"schema": 1, "samples": []}', "*not a whole pytest-ilp report (no checkpoint, *)"),
    ],
)
def test_a_malformed_baseline_is_a_usage_error_saying_what_is_wrong(
    pytester: pytest.Pytester, world: World, content: str | None, message: str
) -> None:
    write_jsonl(pytester.path / "data.jsonl", [{"prompt": "Q", "completion": " A"}])
    if content is not None:
        (pytester.path / "old.json").write_text(content)
    result = ilp(pytester, world, "--ilp-baseline=old.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


# -- reports of one gated run --------------------------------------------------------------------


@dataclass(frozen=True)
class GatedRun:
    """One real `pytest` run (a subprocess) whose files the tests below read: knowledge_conflict
    over budget, one must-learn sample, the other causes within budget."""

    folder: Path
    planted: Planted
    must_learn: str
    returncode: int
    stdout: str

    def read(self, name: str) -> str:
        return (self.folder / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def gated_run(world: World, planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> GatedRun:
    folder = tmp_path_factory.mktemp("gated")
    must = planted.of("data_inconsistency")[0]
    records = [
        {**r, "origin": "batch-7", **({"must_learn": True} if r["id"] == must else {})}
        for r in planted.records
    ]
    write_jsonl(folder / "data.jsonl", records)
    (folder / "conftest.py").write_text(PLANT.format(planted=planted.causes))
    (folder / "step-summary.md").write_text("# earlier step\n")
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(folder / "step-summary.md")}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--ilp-checkpoint={world.checkpoint}",
        "--ilp-data=data.jsonl",
        "--ilp-threshold=knowledge_conflict=0.2",
        *WITHIN[1:],
        "--ilp-report=out/report.json",
        "--ilp-markdown=out/summary.md",
        "--ilp-export=out/fix.jsonl",
        "--junitxml=out/junit.xml",
    ]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, check=False)
    return GatedRun(folder, Planted(records, planted.causes), must, done.returncode, done.stdout)


def test_the_verdict_line_and_the_exit_status_agree(gated_run: GatedRun) -> None:
    assert gated_run.returncode == pytest.ExitCode.TESTS_FAILED
    # Once in the summary table's section, once more as the first line of the closing block
    # that a person reads last, and never a PASSED anywhere.
    assert gated_run.stdout.count("ilp gate: FAILED") == 2
    assert "ilp gate: PASSED" not in gated_run.stdout
    assert (
        "ilp gate: FAILED — must-learn not learned: 1; over budget: knowledge_conflict 3/12 "
        "(25.0%) > 20%\n" in gated_run.stdout
    )


def test_json_report_records_the_gate_and_each_decision(gated_run: GatedRun) -> None:
    report = json.loads(gated_run.read("out/report.json"))
    gate = report["gate"]
    assert gate["passed"] is False and gate["failed"] == 4 and gate["tolerated"] == 2
    assert gate["verdict"] in gated_run.stdout
    assert gate["must_learn_unlearned"] == [gated_run.must_learn]
    (scope,) = gate["scopes"]
    assert scope["scope"] == "" and scope["samples"] == 12
    assert scope["budgets"] == {
        "knowledge_conflict": {"share": 0.2},
        "data_inconsistency": {"count": 2},
        "missing_knowledge": {"share": 0.1},
    }
    rows = {row["name"]: row for row in scope["rows"]}
    assert rows["knowledge_conflict"]["status"] == "over"
    assert rows["knowledge_conflict"]["unlearned"] == 3
    assert rows["data_inconsistency"]["status"] == "within"
    decisions = {s["id"]: s["gate"] for s in report["samples"]}
    expected = {i: "passed" for i in gated_run.planted.learned}
    expected |= {i: "failed" for i in gated_run.planted.of("knowledge_conflict")}
    expected |= {i: "tolerated" for i in gated_run.planted.causes if i not in expected}
    expected[gated_run.must_learn] = "failed"
    assert decisions == expected
    assert all(s["gate_scopes"] == [""] for s in report["samples"])


def test_markdown_summary_is_written_and_appended_to_the_github_step_summary(
    gated_run: GatedRun,
) -> None:
    summary = gated_run.read("out/summary.md")
    assert gated_run.read("step-summary.md") == "# earlier step\n" + summary + "\n"
    lines = summary.splitlines()
    assert lines[0] == "### pytest-ilp: ❌ FAILED"
    assert (
        "| cause | unlearned | share | budget | status |" in lines
        and "| knowledge_conflict | 3 | 25.0% | 20% | ❌ over |" in lines
        and "| data_inconsistency | 2 | 16.7% | 2 | ✅ within |" in lines
    )
    assert f"**Must-learn samples not learned (1):** `{gated_run.must_learn}`" in lines
    assert "<details><summary>Top unlearned samples (6 of 6)</summary>" in lines
    top = [line for line in lines if line.startswith("| `")]
    assert len(top) == 6
    # The failing samples come first, the tolerated ones after them.
    assert [row.split(" | ")[3] for row in top] == ["failed"] * 4 + ["tolerated"] * 2
    assert any(row.startswith(f"| `{gated_run.must_learn}` (must-learn) |") for row in top)


def test_junit_xml_carries_the_gate_decision_and_the_cause_figures(gated_run: GatedRun) -> None:
    tree = ET.parse(gated_run.folder / "out" / "junit.xml")
    cases = {case.get("name"): case for case in tree.iter("testcase")}
    conflict = gated_run.planted.of("knowledge_conflict")[0]
    tolerated = gated_run.planted.of("missing_knowledge")[0]
    properties = {p.get("name"): p.get("value") for p in cases[conflict].iter("property")}
    assert properties["ilp_cause"] == "knowledge_conflict"
    assert properties["ilp_gate"] == "failed"
    assert properties["ilp_gate_reason"] == (
        "over budget: knowledge_conflict: 3 of 12 unlearned (25.0%), budget 20%"
    )
    assert properties["ilp_cause_unlearned"] == "3"
    assert properties["ilp_cause_share"] == "0.25"
    assert properties["ilp_cause_budget"] == "20%"
    assert cases[conflict].find("failure") is not None
    properties = {p.get("name"): p.get("value") for p in cases[tolerated].iter("property")}
    assert properties["ilp_gate"] == "tolerated"
    skipped = cases[tolerated].find("skipped")
    assert skipped is not None and skipped.get("type") == "pytest.xfail"
    assert "missing_knowledge: 1 of 12 unlearned (8.3%), budget 10%" in (
        skipped.get("message") or ""
    )
    learned = gated_run.planted.learned[0]
    properties = {p.get("name"): p.get("value") for p in cases[learned].iter("property")}
    assert properties["ilp_gate"] == "passed" and "ilp_cause" not in properties


def test_export_holds_the_unlearned_records_whole_with_cause_and_fix(gated_run: GatedRun) -> None:
    lines = [json.loads(line) for line in gated_run.read("out/fix.jsonl").splitlines()]
    originals = {r["id"]: r for r in gated_run.planted.records}
    assert [r["id"] for r in lines] == list(gated_run.planted.causes)
    for exported in lines:
        ilp = exported.pop("ilp")
        assert exported == originals[ilp["id"]]  # every original field, "origin" included
        assert ilp["cause"] == gated_run.planted.causes[ilp["id"]]
        assert ilp["suggestion"] == f"fix the {ilp['cause']}"
        assert ilp["source"].startswith("data.jsonl:")
        assert ilp["gate"] in ("failed", "tolerated") and isinstance(ilp["produced"], str)
        assert ilp["first_divergence"]["position"] >= 0


# -- shards and merging --------------------------------------------------------------------------


def test_shards_split_the_samples_stably_and_merge_gates_the_whole(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    setup(pytester, planted)
    budgets = ("--ilp-threshold=knowledge_conflict=0.25", *WITHIN[1:])
    ilp(pytester, world, *budgets, "--ilp-report=full.json")
    for shard in (1, 2):
        ilp(pytester, world, *budgets, f"--ilp-shard={shard}/2", f"--ilp-report=shard{shard}.json")
    shards = [pytester.path / f"shard{n}.json" for n in (1, 2)]
    ids = [{s["id"] for s in json.loads(shard.read_text())["samples"]} for shard in shards]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert ids[0] | ids[1] == {r["id"] for r in planted.records}

    # Stable under reordering: the same ids in shard 1 with the file reversed.
    write_jsonl(pytester.path / "data.jsonl", planted.records[::-1])
    collected = ilp(pytester, world, "--ilp-shard=1/2", "--collect-only", "-q")
    assert {line.split("::")[1] for line in collected.stdout.lines if "::" in line} == ids[0]

    merge = pytester.run(
        sys.executable, "-m", "pytest_ilp", "merge", "shard2.json", "shard1.json", "-o", "all.json"
    )
    assert merge.ret == 0
    merge.stdout.fnmatch_lines(["ilp gate: PASSED — 6 unlearned within budget"])
    merged = json.loads((pytester.path / "all.json").read_text())
    full = json.loads((pytester.path / "full.json").read_text())
    for path in (pytester.path / "all.json", pytester.path / "full.json", *shards):
        assert_round_trip(path)
    assert merged["summary"] == full["summary"]
    assert merged["gate"] == full["gate"]
    assert [s["id"] for s in merged["samples"]] == [s["id"] for s in full["samples"]]

    # Over budget on the whole: the merge says so and exits 1.
    for n in (1, 2):
        path = pytester.path / f"shard{n}.json"
        report = json.loads(path.read_text())
        report["gate"]["scopes"][0]["budgets"]["knowledge_conflict"] = {"count": 2}
        path.write_text(json.dumps(report))
    over = pytester.run(
        sys.executable, "-m", "pytest_ilp", "merge", "shard1.json", "shard2.json", "-o", "all.json"
    )
    assert over.ret == 1
    over.stdout.fnmatch_lines(
        ["ilp gate: FAILED — over budget: knowledge_conflict 3/12 (25.0%) > 2"]
    )
    missing = pytester.run(
        sys.executable, "-m", "pytest_ilp", "merge", "shard1.json", "-o", "x.json"
    )
    assert missing.ret == 4
    missing.stderr.fnmatch_lines(["error: shard 2/2 missing: the budgets apply to the whole*"])


# -- pytest-xdist ----------------------------------------------------------------------------------


def test_xdist_gives_the_same_outcomes_summary_and_report_scoring_each_sample_once(
    pytester: pytest.Pytester, world: World, planted: Planted
) -> None:
    pytest.importorskip("xdist")
    setup(pytester, planted)
    budgets = ("--ilp-threshold=knowledge_conflict=0.2", *WITHIN[1:])
    before = set(Path(tempfile.gettempdir()).glob("pytest-ilp-run-*"))
    # Two workers first, without the cache: between them they score the 12 samples once,
    # sharing a run-only folder, which is gone afterwards. (One run with workers: each costs
    # two fresh processes.)
    parallel = ilp(pytester, world, *budgets, "-n", "2", "--ilp-no-cache", "--ilp-report=n2.json")
    parallel.stdout.fnmatch_lines(["scored 12 samples in * s*; 0 from cache"])
    assert set(Path(tempfile.gettempdir()).glob("pytest-ilp-run-*")) <= before
    serial = ilp(pytester, world, *budgets, "-n", "0", "--ilp-report=n0.json")
    plain = ilp(pytester, world, *budgets, "-p", "no:xdist", "--ilp-report=plain.json")
    for result in (parallel, serial, plain):
        result.assert_outcomes(passed=6, failed=3, xfailed=3)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert ilp_section(parallel) == ilp_section(serial) == ilp_section(plain)
    assert ilp_section(parallel)[-1] == (
        "ilp gate: FAILED — over budget: knowledge_conflict 3/12 (25.0%) > 20%"
    )
    reports = [
        json.loads((pytester.path / n).read_text()) for n in ("n2.json", "n0.json", "plain.json")
    ]
    assert reports[0] == reports[1] == reports[2]
