"""What a run shows a person: last, the gate's verdict, every file written and what to run
next; and no transformers progress bars on the way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conftest import PLANT, write_jsonl
from world import World

pytestmark = pytest.mark.fake_world


@pytest.fixture(scope="module")
def planted(world: World, truth: dict[str, bool]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Four learned and four unlearned records; the unlearned ones get causes planted by a
    conftest hook: three knowledge conflicts and one missing knowledge."""
    learned = [r for r in world.raw_records[:100] if truth[r["id"]]][:4]
    unlearned = [r for r in world.raw_records[:100] if not truth[r["id"]]][:4]
    causes = ["knowledge_conflict"] * 3 + ["missing_knowledge"]
    return learned + unlearned, {r["id"]: c for r, c in zip(unlearned, causes)}


def run(
    pytester: pytest.Pytester,
    world: World,
    planted: tuple[list[dict[str, Any]], dict[str, str]],
    *args: str,
) -> pytest.RunResult:
    records, causes = planted
    write_jsonl(pytester.path / "data.jsonl", records)
    pytester.makeconftest(PLANT.format(planted=causes))
    return pytester.runpytest(
        f"--ilp-checkpoint={world.checkpoint}",
        "--ilp-data=data.jsonl",
        "--ilp-threshold=missing_knowledge=1",
        "--ilp-threshold=knowledge_conflict=1",
        *args,
    )


def closing_block(result: pytest.RunResult) -> list[str]:
    """The lines between the "ilp gate" separator and pytest's final counts line."""
    lines = result.stdout.lines
    start = max(i for i, line in enumerate(lines) if "= ilp gate =" in line)
    assert lines[-1].startswith("=") and " in " in lines[-1], lines[-1]
    return lines[start + 1 : -1]


def test_a_failed_gate_ends_with_its_verdict_files_and_next_commands(
    pytester: pytest.Pytester, world: World, planted: tuple[list[dict[str, Any]], dict[str, str]]
) -> None:
    result = run(pytester, world, planted, "--ilp-report=out/report.json", "-rf")
    assert result.ret == 1
    block = closing_block(result)
    text = "\n".join(block)
    assert block[0].startswith("ilp gate: FAILED — over budget: knowledge_conflict 3/8")
    assert "3 unlearned samples failed the run (reports above); 1 tolerated" in text
    assert "  written:  JSON report  out/report.json" in block
    # The block comes after pytest's own short summary of the 3 failures, not before it.
    lines = result.stdout.lines
    failed_lines = [i for i, line in enumerate(lines) if line.startswith("FAILED ")]
    assert len(failed_lines) == 3
    separator = max(i for i, line in enumerate(lines) if "= ilp gate =" in line)
    assert max(failed_lines) < separator
    # The next commands (this run's long arguments shown as "…"): one failing sample alone,
    # the export, a baseline.
    failing = [i for i, c in planted[1].items() if c == "knowledge_conflict"]
    assert f"  next:     pytest … -k {failing[0]}" in block
    assert "pytest … --ilp-export=ilp-unlearned.jsonl" in text
    assert "pytest … --ilp-baseline=ilp-baseline.json --ilp-update-baseline" in text
    assert "(… stands for this run's arguments)" in text


def test_every_file_the_run_writes_is_announced_and_no_other(
    pytester: pytest.Pytester,
    world: World,
    planted: tuple[list[dict[str, Any]], dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    step_summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    before = {p for p in pytester.path.rglob("*") if ".pytest_cache" not in p.parts}
    result = run(
        pytester,
        world,
        planted,
        "--ilp-report=out/report.json",
        "--ilp-markdown=out/summary.md",
        "--ilp-export=out/fix.jsonl",
        "--ilp-baseline=base.json",
        "--ilp-update-baseline",
        "-p",
        "no:cacheprovider",
    )
    block = closing_block(result)
    start = next(i for i, line in enumerate(block) if "written:" in line)
    end = next(i for i, line in enumerate(block) if "next:" in line)
    announced = {line.split()[-1] for line in block[start:end]}
    after = {
        p
        for p in pytester.path.rglob("*")
        if p.is_file() and ".pytest_cache" not in p.parts and "__pycache__" not in p.parts
    }
    new_files = {p.relative_to(pytester.path).as_posix() for p in after - before} - {
        "data.jsonl",
        "conftest.py",
    }
    assert new_files == {"out/report.json", "out/summary.md", "out/fix.jsonl", "base.json"}
    assert step_summary.exists()
    assert announced == new_files | {os.path.relpath(step_summary, pytester.path)}


def test_a_passing_gate_says_so_last_and_suggests_keeping_a_report(
    pytester: pytest.Pytester, world: World, planted: tuple[list[dict[str, Any]], dict[str, str]]
) -> None:
    result = run(pytester, world, planted, "--ilp-threshold=knowledge_conflict=3")
    assert result.ret == 0
    block = closing_block(result)
    assert block[0] == "ilp gate: PASSED — 4 unlearned within budget"
    assert "4 tolerated (xfailed: within budget or known)" in block[1]
    assert not any("written:" in line for line in block)
    assert "  next:     pytest … --ilp-report=ilp-report.json" in block


def test_the_next_command_is_the_runs_own_when_short() -> None:
    from pytest_ilp.report.outputs import next_command

    assert next_command(["example_project", "-k", "q0001"]) == "pytest example_project"
    assert next_command(["-kq0001", "tests", "-x"]) == "pytest tests -x"
    assert next_command(["--ilp-checkpoint=" + "x" * 80]) == "pytest …"


def test_loading_and_saving_models_shows_no_transformers_bars(
    pytester: pytest.Pytester, real_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(pytester, real_world, (real_world.raw_records[:8], {}), "--ilp-no-cache")
    output = result.stdout.str() + result.stderr.str()
    assert "scored 8 samples" in output  # the model was loaded, not read from the cache
    assert "Loading weights" not in output
    from pytest_ilp.testing import tiny

    tiny.save_checkpoint(*_model_and_tokenizer(real_world), pytester.path / "copy")
    captured = capsys.readouterr()
    assert "Writing model shards" not in captured.out + captured.err


def _model_and_tokenizer(world: World) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_ilp.core.backends.loading import quiet_loading

    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(world.checkpoint)
    return model, AutoTokenizer.from_pretrained(world.checkpoint)
