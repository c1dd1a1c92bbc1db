"""Fake checkpoints: a tokenizer and a table of answers instead of a model, for fast tests.

A test that needs verdicts but not a real model's behaviour (the gate, budgets, settings, bad
input, the report views) can point `--ilp-checkpoint` at a folder written here: pytest-ilp
scores it with the fake backend (`pytest_ilp.core.backends.fake`), which answers each table prompt
with the table's answer and every other prompt with EOS, in microseconds, with no torch model.
The folder is a checkpoint like any other to the rest of the plugin (config.json, a saved
tokenizer; its content keys the cache), so the whole pipeline runs as it does for a model.

    tokenizer = pytest_ilp.testing.tiny.train_tokenizer(texts)
    write_fake_checkpoint(folder, tokenizer, [
        {"prompt": "Q: 2+2? A:", "completion": " 4"},          # learned if the data says " 4"
        {"messages": [{"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello", }], "top_logprob": -0.6},
    ])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.core.backends.fake import (
    ANSWERS_FILE,
    DEFAULT_LOGPROBS,
    FAKE_MODEL_TYPE,
    render_answers,
)
from pytest_ilp.core.samples import sample_from_record


def write_fake_checkpoint(
    folder: str | Path,
    tokenizer: Any,
    answers: Iterable[Mapping[str, Any]],
    *,
    logprobs: Mapping[str, float] | None = None,
    max_position_embeddings: int = 256,
) -> Path:
    """Save `tokenizer` and the `answers` table into `folder` as a fake checkpoint; return it.

    Each answer is a record in a format pytest-ilp reads (prompt/completion, chat messages...)
    whose completion is what the fake model says to its prompt, with optional `top_logprob`
    and `second_logprob` fields. `logprobs` overrides `DEFAULT_LOGPROBS` for all of them.
    """
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    unknown = set(logprobs or {}) - set(DEFAULT_LOGPROBS)
    if unknown:
        raise ValueError(f"unknown log-probability names {sorted(unknown)}")
    config = {
        "model_type": FAKE_MODEL_TYPE,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max_position_embeddings,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "fake": {**DEFAULT_LOGPROBS, **(logprobs or {})},
    }
    write_text_atomic(folder / "config.json", json.dumps(config, indent=2) + "\n")
    generation = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    write_text_atomic(folder / "generation_config.json", json.dumps(generation, indent=2) + "\n")
    # The answers are stored rendered too, so that the backend need not render them per run.
    records = [dict(answer) for answer in answers]
    samples = [sample_from_record(r, folder / ANSWERS_FILE, n) for n, r in enumerate(records, 1)]
    rendered = render_answers(samples, tokenizer, frozenset({tokenizer.eos_token_id}))
    table = "".join(
        json.dumps({**record, "input_ids": list(ids), "target_start": start}) + "\n"
        for record, (ids, start) in zip(records, rendered, strict=True)
    )
    write_text_atomic(folder / ANSWERS_FILE, table)
    return folder
