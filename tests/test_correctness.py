"""The verdict of one teacher-forced pass equals what greedy `model.generate` does.

For every sample of the tiny world (300 raw, 300 chat; some learned, some half-learned, some
never seen), the plugin's verdict, read from its JSON report after a real pytest run, must equal
the result of greedy generation from the prompt as a user would write it, independent of the
plugin's own rendering code.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import write_jsonl
from world import World, greedy_generations


def prompt_ids_of(record: dict[str, Any], tokenizer: Any) -> list[int]:
    if "messages" in record:
        return list(
            tokenizer.apply_chat_template(
                record["messages"][:-1], add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
    return list(tokenizer(record["prompt"])["input_ids"])


def target_of(record: dict[str, Any]) -> str:
    return record["messages"][-1]["content"] if "messages" in record else record["completion"]


@pytest.mark.parametrize("kind", ["raw", "chat"])
def test_verdict_equals_greedy_generation(
    kind: str, world: World, pytester: pytest.Pytester
) -> None:
    records = world.raw_records if kind == "raw" else world.chat_records
    data = write_jsonl(pytester.path / "data.jsonl", records)
    pytester.runpytest(
        f"--ilp-checkpoint={world.checkpoint}", f"--ilp-data={data}", "--ilp-report=r.json", "-q"
    )
    report = json.loads((pytester.path / "r.json").read_text())
    verdicts = {s["id"]: s for s in report["samples"]}
    assert len(verdicts) == len(records) >= 200

    tokenizer = AutoTokenizer.from_pretrained(world.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(world.checkpoint, dtype=torch.float32).eval()
    eos = tokenizer.eos_token_id
    # Greedy generation from each prompt: as long as the target and EOS, and 8 tokens more.
    generations = greedy_generations(
        model,
        tokenizer,
        [prompt_ids_of(record, tokenizer) for record in records],
        [len(tokenizer(target_of(r), add_special_tokens=False)["input_ids"]) + 9 for r in records],
    )
    learned = mismatched_production = 0
    for record, new in zip(records, generations):
        target = target_of(record)
        reproduces = (
            eos in new
            and tokenizer.decode(new[: new.index(eos)], skip_special_tokens=False) == target
        )
        verdict = verdicts[record["id"]]
        assert verdict["learned"] is reproduces, (record, new, verdict)
        learned += reproduces
        if not reproduces:
            shown = new[: new.index(eos)] if eos in new else new
            mismatched_production += (
                tokenizer.decode(shown, skip_special_tokens=False) != verdict["produced"]
            )
    # The world must exercise both outcomes for this test to mean anything.
    assert 0.2 * len(records) < learned < 0.8 * len(records)
    # What the report says the model produced is what generate produces.
    assert mismatched_production == 0
