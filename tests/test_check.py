"""`pytest_ilp.check`: the whole check without pytest, the same as a pytest run's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_ilp
from pytest_ilp.core.errors import IlpDataError, IlpUsageError

from conftest import write_jsonl
from world import World


def test_check_gives_the_verdicts_diagnoses_gate_and_report_of_a_pytest_run(
    pytester: pytest.Pytester, world: World, truth: dict[str, bool]
) -> None:
    records = world.raw_records[:40]
    data = write_jsonl(pytester.path / "sft.jsonl", records)
    result = pytester.runpytest(
        f"--ilp-checkpoint={world.checkpoint}",
        "--ilp-data=sft.jsonl",
        "--ilp-threshold=total=10%",
        "--ilp-report=report.json",
    )
    written = json.loads((pytester.path / "report.json").read_text(encoding="utf-8"))

    run = pytest_ilp.check(world.checkpoint, data, thresholds={"total": "10%"}, root=pytester.path)

    assert [s.id for s in run.samples] == [r["id"] for r in records]
    assert {i for i, v in run.verdicts.items() if v.learned} == {
        r["id"] for r in records if truth[r["id"]]
    }
    assert set(run.diagnoses) == set(run.unlearned) == set(run.signals)
    document = json.loads(run.report.to_json())
    assert document["samples"] == written["samples"]
    assert document["gate"] == written["gate"]
    assert document["summary"] == written["summary"]
    assert run.passed is (result.ret == pytest.ExitCode.OK) is False  # 10% of 40 is too few
    assert run.verdict_line in result.stdout.str()
    path = run.write_report(pytester.path / "again.json")
    assert json.loads(path.read_text(encoding="utf-8"))["samples"] == written["samples"]


def test_check_refuses_bad_input_with_the_message_pytest_prints(
    pytester: pytest.Pytester, world: World
) -> None:
    data = write_jsonl(pytester.path / "sft.jsonl", world.raw_records[:2])
    result = pytester.runpytest("--ilp-checkpoint=nowhere", "--ilp-data=sft.jsonl")
    with pytest.raises(IlpUsageError) as raised:
        pytest_ilp.check(pytester.path / "nowhere", data)
    assert f"ERROR: {raised.value}" in result.stderr.str()
    with pytest.raises(IlpUsageError, match=r"thresholds: total: a share must lie between 0"):
        pytest_ilp.check(world.checkpoint, data, thresholds={"total": 1.5})
    with pytest.raises(IlpUsageError, match=r"thresholds: unknown cause\(s\) knowledge_conflit"):
        pytest_ilp.check(world.checkpoint, data, thresholds={"knowledge_conflit": 1})


def test_the_core_imports_no_pytest() -> None:
    package = Path(pytest_ilp.__file__).parent
    modules = sorted(
        ".".join(p.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in (package / "core").rglob("*.py")
    )
    assert len(modules) > 15
    # The backends' own modules import torch and transformers (or vllm): the others must not,
    # so that the plugin loads them only when a model is scored.
    runtimes = [m for m in modules if m.startswith("pytest_ilp.core.backends.")]
    code = (
        "import importlib, sys\n"
        f"for m in {[m for m in modules if m not in runtimes]!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))\n"
        f"for m in {runtimes!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('pytest', '_pytest') if m in sys.modules))\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split("\n")[:2] == ["[]", "[]"]


def test_check_narrows_to_a_scope_reads_a_train_log_as_records_and_may_skip_the_gate(
    tmp_path: Path, world: World
) -> None:
    records = world.raw_records[35:65]  # held-out facts, then trained ones
    data = write_jsonl(tmp_path / "sft.jsonl", records)
    ids = [r["id"] for r in records]
    scope = [*ids[20:], *ids[:3]]
    log = [{"id": i, "step": step, "loss": 3.0 / step} for i in ids for step in (1, 2, 3)]
    from_file = pytest_ilp.check(
        world.checkpoint, data, scope=scope, train_log=write_jsonl(tmp_path / "log.jsonl", log)
    )
    from_records = pytest_ilp.check(world.checkpoint, data, scope=scope, train_log=log, gate=False)

    assert [s.id for s in from_records.samples] == scope == list(from_records.verdicts)
    assert from_file.gate is not None and from_records.gate is None
    with pytest.raises(IlpUsageError, match=r"check\(gate=False\) decided no gate"):
        assert from_records.passed
    gated = from_file.report.to_dict()
    document = from_records.report.to_dict()
    assert "gate" in gated and "gate" not in document
    # A sample's record is the same but for the gate's decision on it.
    decision = {"gate", "gate_reason", "gate_scopes", "baseline"}
    assert [{k: v for k, v in s.items() if k not in decision} for s in gated["samples"]] == (
        document["samples"]
    )
    assert {s["learned"] for s in document["samples"]} == {True, False}
    assert all(s["signals"]["training"] is not None for s in document["samples"] if s["cause"])
    # The budget is a share of the scope: 13 samples, not the data's 30.
    assert gated["gate"]["scopes"][0]["samples"] == len(scope)


def test_check_refuses_a_bad_model_scope_verdicts_or_train_log_saying_what_to_do(
    tmp_path: Path, world: World
) -> None:
    from pytest_ilp.core.checkpoint import inspect_checkpoint
    from pytest_ilp.core.scoring import ScoringResult

    data = write_jsonl(tmp_path / "sft.jsonl", world.raw_records[:3])
    model = object()  # refused before it is looked at
    cases: list[tuple[dict[str, object], str]] = [
        ({"model": model}, r"check\(model=\.\.\.\) needs the tokenizer"),
        (
            {"checkpoint": world.checkpoint, "tokenizer": model},
            r"tokenizer=\.\.\.\) goes with model",
        ),
        ({"model": model, "tokenizer": model, "cache_dir": tmp_path}, "never cached"),
        ({"model": model, "tokenizer": model, "backend": "vllm"}, "scored by the hf backend"),
        ({"checkpoint": world.checkpoint, "scope": ["nope"]}, r"no sample of the data \('nope'\)"),
        ({"checkpoint": world.checkpoint, "scope": []}, "names no sample"),
        (
            {
                "checkpoint": world.checkpoint,
                "scored": ScoringResult(inspect_checkpoint(world.checkpoint), "hf"),
            },
            r"scored: no verdict for 3 sample\(s\) in scope",
        ),
    ]
    for arguments, message in cases:
        with pytest.raises(IlpUsageError, match=message):
            pytest_ilp.check(data=data, **arguments)  # type: ignore[arg-type]
    with pytest.raises(IlpDataError, match=r"check\(train_log=\.\.\.\) record:2: expected a JSON"):
        pytest_ilp.check(world.checkpoint, data, train_log=[{"id": "a", "step": 1, "loss": 1}, {}])
