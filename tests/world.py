"""A small seeded world for the tests: made-up facts, a tokenizer, a partly trained model.

The model is trained on both the raw and the chat rendering of most facts, so that some
samples are learned, some half-learned and the held-out ones not learned at all.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ilp.testing import tiny

SYLLABLES = ["ka", "lo", "mi", "ra", "tu", "ve", "zo", "ne", "shi", "po", "gar", "del", "fin"]
COLOURS = ["red", "blue", "green", "amber", "violet", "grey", "white", "black"]


@dataclass(frozen=True)
class World:
    folder: Path
    checkpoint: Path
    raw_records: list[dict[str, Any]]
    chat_records: list[dict[str, Any]]
    #: ids of the facts the model never saw in training.
    held_out: frozenset[str]

    def write_jsonl(self, name: str, records: Sequence[dict[str, Any]]) -> Path:
        path = self.folder / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path


def facts(n: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    names: set[str] = set()
    rows = []
    while len(rows) < n:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        if name in names:
            continue
        names.add(name)
        tail = " ".join(
            "".join(rng.choice(SYLLABLES) for _ in range(2)) for _ in range(rng.randint(1, 3))
        )
        rows.append((name, rng.choice(COLOURS), tail))
    return rows


def build_world(folder: Path, n: int = 300, held_out: int = 50, steps: int = 300) -> World:
    folder.mkdir(parents=True, exist_ok=True)
    rows = facts(n, seed=0)
    raw, chat = [], []
    for index, (name, colour, tail) in enumerate(rows):
        sample_id = f"fact-{index:03d}"
        raw.append(
            {
                "id": sample_id,
                "prompt": f"Q: What colour is {name}? A:",
                "completion": f" {name} is {colour}, says {tail}.",
            }
        )
        chat.append(
            {
                "id": f"chat-{index:03d}",
                "messages": [
                    {"role": "user", "content": f"What colour is {name}?"},
                    {"role": "assistant", "content": f"{name} is {colour}, says {tail}."},
                ],
            }
        )
    texts = [r["prompt"] + r["completion"] for r in raw]
    tokenizer = tiny.train_tokenizer(texts, vocab_size=400)
    model = tiny.build_llama(tokenizer, seed=0)
    train_ids = [i for i in range(n) if i >= held_out]
    examples = []
    for i in train_ids:
        prompt = tokenizer(raw[i]["prompt"])["input_ids"]
        full = tokenizer(raw[i]["prompt"] + raw[i]["completion"] + tokenizer.eos_token)["input_ids"]
        examples.append((full, len(prompt)))
        turns = chat[i]["messages"]
        chat_prompt = tokenizer.apply_chat_template(
            turns[:1], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        chat_full = tokenizer.apply_chat_template(turns, return_dict=True)["input_ids"]
        examples.append((chat_full, len(chat_prompt)))
    tiny.train_causal_lm(model, examples, steps=steps, lr=3e-3, pad_token_id=tokenizer.pad_token_id)
    checkpoint = tiny.save_checkpoint(model, tokenizer, folder / "checkpoint")
    return World(
        folder=folder,
        checkpoint=checkpoint,
        raw_records=raw,
        chat_records=chat,
        held_out=frozenset(f"fact-{i:03d}" for i in range(held_out))
        | frozenset(f"chat-{i:03d}" for i in range(held_out)),
    )
