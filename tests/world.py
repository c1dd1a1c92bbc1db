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
from pytest_ilp.testing.fake import write_fake_checkpoint

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


def records(rows: Sequence[tuple[str, str, str]]) -> tuple[list[dict[str, Any]], ...]:
    """The raw (prompt/completion) and chat record of each fact, with ids fact-NNN, chat-NNN."""
    raw, chat = [], []
    for index, (name, colour, tail) in enumerate(rows):
        raw.append(
            {
                "id": f"fact-{index:03d}",
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
    return raw, chat


def held_out_ids(held_out: int) -> frozenset[str]:
    return frozenset(f"fact-{i:03d}" for i in range(held_out)) | frozenset(
        f"chat-{i:03d}" for i in range(held_out)
    )


def build_world(folder: Path, n: int = 300, held_out: int = 50, steps: int = 300) -> World:
    """Train the world's model into `folder`, or take the one a finished build left there (the
    build is deterministic, so xdist workers can share one: see the `_trained` fixture)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw, chat = records(facts(n, seed=0))
    built = folder / "built.json"
    settings = {"n": n, "held_out": held_out, "steps": steps}
    if built.is_file() and json.loads(built.read_text()) == settings:
        return World(folder, folder / "checkpoint", raw, chat, held_out_ids(held_out))
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
    built.write_text(json.dumps(settings))
    return World(
        folder=folder,
        checkpoint=checkpoint,
        raw_records=raw,
        chat_records=chat,
        held_out=held_out_ids(held_out),
    )


def build_fake_world(
    folder: Path, n: int = 300, held_out: int = 50
) -> tuple[World, dict[str, bool]]:
    """The world's records on a fake checkpoint (a table of answers, no model, built in about
    a second), and which records it reproduces.

    Like the trained model, it gets the held-out facts wrong (another colour) and half-learns
    some trained ones (right up to the end of the tail, then more); the rest it reproduces.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = facts(n, seed=0)
    raw, chat = records(rows)
    answers = []
    for index, (name, colour, tail) in enumerate(rows):
        if index < held_out:
            colour = COLOURS[(COLOURS.index(colour) + 1) % len(COLOURS)]
        elif index % 8 == 5:
            tail += " ka"  # right up to the end of the tail, then it goes on
        answer = f"{name} is {colour}, says {tail}."
        answers.append({"prompt": raw[index]["prompt"], "completion": " " + answer})
        turns = [chat[index]["messages"][0], {"role": "assistant", "content": answer}]
        answers.append({"messages": turns})
    tokenizer = tiny.train_tokenizer([r["prompt"] + r["completion"] for r in raw], vocab_size=400)
    checkpoint = write_fake_checkpoint(folder / "checkpoint", tokenizer, answers)
    truth = {r["id"]: a["completion"] == r["completion"] for r, a in zip(raw, answers[::2])}
    truth |= {r["id"]: a["messages"][-1] == r["messages"][-1] for r, a in zip(chat, answers[1::2])}
    world = World(folder, checkpoint, raw, chat, held_out_ids(held_out))
    return world, truth


def greedy_generations(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: Sequence[int]
) -> list[list[int]]:
    """What greedy `model.generate` gives each prompt on its own: its new tokens, at most
    `max_new_tokens[i]`, up to and with EOS.

    Prompts of one length run as one batch: with no padding, each row is exactly that prompt's
    own generation (a row that stops early is padded after its EOS, and cut there). One call per
    prompt length instead of one per prompt: the reference costs a fraction of the per-prompt
    loop, and stays independent of the plugin's code."""
    import torch

    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(index)
    eos = tokenizer.eos_token_id
    generations: list[list[int]] = [[] for _ in prompts]
    for length, members in by_length.items():
        with torch.inference_mode():
            output = model.generate(
                input_ids=torch.tensor([list(prompts[i]) for i in members]),
                attention_mask=torch.ones((len(members), length), dtype=torch.long),
                max_new_tokens=max(max_new_tokens[i] for i in members),
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row, index in enumerate(members):
            tokens = output[row, length:].tolist()[: max_new_tokens[index]]
            generations[index] = tokens[: tokens.index(eos) + 1] if eos in tokens else tokens
    return generations
