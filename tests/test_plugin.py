"""End to end: real pytest runs (pytester) of the plugin on the tiny trained world."""

from __future__ import annotations

import json
import shutil
import sys
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from conftest import write_jsonl
from world import World


@pytest.fixture
def records(world: World, truth: dict[str, bool]) -> list[dict[str, Any]]:
    """Six learned and six unlearned raw records, interleaved."""
    learned = [r for r in world.raw_records[:100] if truth[r["id"]]][:6]
    unlearned = [r for r in world.raw_records[:100] if not truth[r["id"]]][:6]
    assert len(learned) == len(unlearned) == 6
    return [r for pair in zip(learned, unlearned) for r in pair]


def ilp(pytester: pytest.Pytester, world: World, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--ilp-checkpoint={world.checkpoint}", *args)


# -- out of the way when not asked for ----------------------------------------------------------


def test_plugin_is_inert_without_a_checkpoint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inert_plain="def test_ok():\n    assert True\n",
        test_inert_samples="def test_sample(ilp_sample):\n    pass\n",
    )
    write_jsonl(pytester.path / "data.jsonl", [{"prompt": "a", "completion": "b"}])
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*pytest-ilp is not active: pass --ilp-checkpoint*"])
    assert "ilp:" not in result.stdout.str()
    assert "= pytest-ilp =" not in result.stdout.str()


def test_importing_the_package_does_not_import_torch(pytester: pytest.Pytester) -> None:
    result = pytester.run(
        sys.executable,
        "-c",
        "import sys, pytest_ilp, pytest_ilp.plugin; "
        "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))",
    )
    assert result.ret == 0
    assert result.stdout.lines[-1] == "[]"


# -- one test per sample -----------------------------------------------------------------------


def test_each_sample_is_an_item_named_after_its_id(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", records)
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "--collect-only", "-q")
    result.stdout.fnmatch_lines([f"data.jsonl::{r['id']}" for r in records])
    assert "ilp: scoring" not in result.stdout.str()  # collecting scores nothing


def test_samples_pass_exactly_when_greedy_decoding_reproduces_them(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]], truth: dict[str, bool]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", records)
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "-rA")
    result.assert_outcomes(passed=6, failed=6)
    for record in records:
        outcome = "PASSED" if truth[record["id"]] else "FAILED"
        result.stdout.fnmatch_lines([f"{outcome} data.jsonl::{record['id']}*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_failure_report_shows_the_evidence_not_a_traceback(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]], truth: dict[str, bool]
) -> None:
    unlearned = next(r for r in records if not truth[r["id"]])
    write_jsonl(pytester.path / "data.jsonl", [unlearned])
    result = ilp(pytester, world, "--ilp-data=data.jsonl")
    result.stdout.fnmatch_lines(
        [
            f"sample {unlearned['id']} (data.jsonl:1) was not learned",
            f"  prompt:    {json.dumps(unlearned['prompt'])}",
            f"  expected:  {json.dumps(unlearned['completion'])} + EOS",
            "  produced:  *",
            "  diverged at target token * of *: expected * (p=0.*), predicted * (p=0.*)",
            "  token accuracy 0.* (*/*)   mean NLL * nats/token   margin -* nats",
        ]
    )
    output = result.stdout.str()
    assert "Traceback" not in output and "site-packages" not in output


def test_summary_table_counts_the_samples(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", records)
    result = ilp(pytester, world, "--ilp-data=data.jsonl")
    result.stdout.fnmatch_lines(
        [
            "*= pytest-ilp =*",
            "checkpoint * (hf cpu float32)",
            "*samples*learned*unlearned*must-learn unlearned*fragile*invalid*",
            "*12*6*6*0 of 0*",
            "scored 12 samples in * s*; 0 from cache",
        ]
    )


def test_json_report_holds_every_sample_and_the_summary(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]], truth: dict[str, bool]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", records)
    ilp(pytester, world, "--ilp-data=data.jsonl", "--ilp-report=out/report.json")
    report = json.loads((pytester.path / "out" / "report.json").read_text())
    assert report["schema"] == 2
    assert report["checkpoint"] == str(world.checkpoint)
    assert report["backend"] == "hf cpu float32"
    assert [s["id"] for s in report["samples"]] == [r["id"] for r in records]
    for sample in report["samples"]:
        assert sample["learned"] is truth[sample["id"]]
        assert sample["source"].startswith("data.jsonl:")
        assert sample["error"] is None
        assert sample["criterion"] == "exact" and sample["criterion_figures"] == {}
        assert 0.0 <= sample["token_accuracy"] <= 1.0 and sample["nll"] >= 0.0
        if sample["learned"]:
            assert sample["first_divergence"] is None and sample["margin"] > 0
            assert sample["produced"] is None and sample["cause"] is None
        else:
            assert sample["first_divergence"]["position"] >= 0 and sample["margin"] < 0
            assert isinstance(sample["produced"], str)
            # Neither --ilp-base nor --ilp-history: diagnosis says what would decide it.
            assert sample["cause"] == "undiagnosed"
            assert "needs --ilp-base" in sample["evidence"]
    assert report["summary"] == {
        "samples": 12,
        "learned": 6,
        "unlearned": 6,
        "learned_share": 0.5,
        "must_learn": 0,
        "must_learn_unlearned": [],
        "fragile": report["summary"]["fragile"],
        "invalid": [],
        "causes": {"undiagnosed": 6},
        "criteria": {"exact": 12},
        "weak_causes": {},  # undiagnosed samples carry no confidence
    }


def test_junit_xml_carries_the_figures_as_properties(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]], truth: dict[str, bool]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", records[:2])
    ilp(pytester, world, "--ilp-data=data.jsonl", "--junitxml=junit.xml")
    tree = ET.parse(pytester.path / "junit.xml")
    cases = {case.get("name"): case for case in tree.iter("testcase")}
    assert set(cases) == {r["id"] for r in records[:2]}
    for name, case in cases.items():
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert properties["ilp_learned"] == str(truth[name])
        assert properties["ilp_sample_id"] == name
        assert {"ilp_token_accuracy", "ilp_nll", "ilp_margin"} <= set(properties)
        assert (case.find("failure") is None) is truth[name]


# -- the cache ---------------------------------------------------------------------------------

CHECK_IMPORTS = """
import sys
def pytest_sessionfinish(session):
    loaded = sorted(m for m in ("torch", "transformers") if m in sys.modules)
    print("heavy modules loaded:", loaded or "none")
"""


def test_second_run_reads_the_cache_and_loads_no_model(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", records)
    pytester.makeconftest(CHECK_IMPORTS)
    args = (f"--ilp-checkpoint={world.checkpoint}", "--ilp-data=data.jsonl", "-s")
    first = pytester.runpytest(*args)
    first.stdout.fnmatch_lines(["ilp: scoring 12 samples*", "scored 12 samples*; 0 from cache"])
    # A fresh process, whose imports are its own: this test's process has torch loaded.
    second = pytester.runpytest_subprocess(*args)
    second.stdout.fnmatch_lines(["scored 0 samples*; 12 from cache", "*6 failed, 6 passed*"])
    second.stdout.fnmatch_lines(["*heavy modules loaded: none"])
    assert "ilp: scoring" not in second.stdout.str()
    third = pytester.runpytest(*args, "--ilp-no-cache")
    third.stdout.fnmatch_lines(["scored 12 samples*; 0 from cache"])


def test_changed_checkpoint_files_invalidate_the_cache(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]]
) -> None:
    checkpoint = shutil.copytree(world.checkpoint, pytester.path / "ckpt")
    write_jsonl(pytester.path / "data.jsonl", records[:4])
    args = ("--ilp-checkpoint=ckpt", "--ilp-data=data.jsonl")
    pytester.runpytest(*args).stdout.fnmatch_lines(["scored 4 samples*; 0 from cache"])
    pytester.runpytest(*args).stdout.fnmatch_lines(["scored 0 samples*; 4 from cache"])
    config = checkpoint / "generation_config.json"
    config.write_text(config.read_text() + "\n")
    pytester.runpytest(*args).stdout.fnmatch_lines(["scored 4 samples*; 0 from cache"])


def test_last_failed_reruns_failures_from_the_cache(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", records)
    ilp(pytester, world, "--ilp-data=data.jsonl").assert_outcomes(passed=6, failed=6)
    rerun = ilp(pytester, world, "--ilp-data=data.jsonl", "--lf")
    rerun.assert_outcomes(failed=6, passed=0)
    rerun.stdout.fnmatch_lines(["scored 0 samples*; 6 from cache"])


def test_only_selected_samples_are_scored(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", records)
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "-k", records[0]["id"])
    result.stdout.fnmatch_lines(["ilp: scoring 1 samples*"])


def test_named_tests_run_alone_but_a_bare_run_adds_the_configured_data(
    pytester: pytest.Pytester, world: World, records: list[dict[str, Any]]
) -> None:
    """Data from ilp.yaml joins a bare `pytest`, even from outside the test folders; a command
    line that names what to run (a file, a node id) runs only that, as pytest does."""
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_plain.py").write_text("def test_plain():\n    pass\n")
    (pytester.path / "data").mkdir()
    write_jsonl(pytester.path / "data" / "sft.jsonl", records[:2])
    (pytester.path / "ilp.yaml").write_text(
        f"checkpoint: {world.checkpoint}\ndata: data/sft.jsonl\n"
    )
    pytester.makeini("[pytest]\ntestpaths = tests\n")
    named = pytester.runpytest("tests/test_plain.py")
    named.assert_outcomes(passed=1)
    assert "ilp: scoring" not in named.stdout.str()
    bare = pytester.runpytest()
    bare.assert_outcomes(passed=2, failed=1)
    bare.stdout.fnmatch_lines(["ilp: scoring 2 samples*"])
