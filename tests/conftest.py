from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from world import World, build_world

# Imported once for the whole session: pytester's in-process runs unload modules first
# imported inside them, and pyarrow refuses to register datasets' types a second time.
with contextlib.suppress(ImportError):
    import datasets  # noqa: F401
# Likewise TRL's trainer modules (trl loads them lazily): one first imported inside an
# in-process run is unloaded after it, while `trl` keeps the old class, and pickling the
# trainer's arguments then fails ("not the same object as trl.trainer.sft_config.SFTConfig").
with contextlib.suppress(Exception):  # any failure shows in the tests that use TRL
    from trl import SFTConfig, SFTTrainer  # noqa: F401


#: a conftest for pytester runs whose `pytest_ilp_diagnose` hook gives the causes in
#: `PLANT.format(planted={sample id: cause})`, and leaves the other samples to the rules.
PLANT = """
from pytest_ilp.core.diagnosis import Diagnosis

PLANTED = {planted!r}


def pytest_ilp_diagnose(sample, verdict, signals):
    cause = PLANTED.get(sample.id)
    if cause is None:
        return None
    return Diagnosis(cause=cause, evidence="planted by the test", suggestion="fix it")
"""


@pytest.fixture(autouse=True)
def _no_github_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process pytest runs must not append to the step summary of the CI job running us."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The tiny trained world, built once per test session (about 20 s on 2 cores)."""
    return build_world(tmp_path_factory.mktemp("world"))


def write_jsonl(path: Path, records: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def truth(world: World) -> dict[str, bool]:
    """Ground truth for the first 100 raw records (50 never trained on, 50 trained on):
    does greedy `model.generate` from the prompt reproduce the completion, then EOS?"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(world.checkpoint, dtype=torch.float32).eval()
    answers = {}
    for record in world.raw_records[:100]:
        prompt = tokenizer(record["prompt"], return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            output = model.generate(
                input_ids=prompt,
                max_new_tokens=40,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        text = tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=False)
        answers[record["id"]] = text.startswith(record["completion"] + tokenizer.eos_token)
    return answers
