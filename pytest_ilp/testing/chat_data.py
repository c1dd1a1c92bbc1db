"""Realistic chat SFT data for a real model: its own greedy answers, and altered copies of some.

For everyday questions (written here, nothing downloaded), asked with and without a system
prompt, the model's greedy answers are generated in left-padded batches; an answer is kept only
when one unpadded teacher-forced pass over the prompt alone predicts each of its tokens as the
argmax, so greedy decoding from that prompt alone gives it too (an answer where padded and
unpadded decoding part at a near-tie is left out, and logged). A sample whose target is that
answer is learned by construction; a copy with two neighbouring words swapped is not (greedy
decoding is deterministic and gives the original). So every sample's true verdict is known
without asking pytest-ilp, which is what the tests and the benchmark compare against.

Answers are kept when they end with the model's stop token and are `MIN_TOKENS`-`MAX_TOKENS`
long (multi-sentence targets); about `ALTERED_SHARE` of the samples are altered copies.
`retokenized` lists the answers whose generated tokens differ from the tokenizer's own encoding
of their text: the model reproduces them through other tokens, a case a token-level check gets
wrong.

Records are cached as JSONL next to the checkpoint's cache, keyed by the checkpoint's weights,
the questions and the library versions (float rounding may move a near-tie between versions).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUESTIONS = (
    "How do I keep basil alive on a windowsill?",
    "What is a good way to start running if I have never exercised?",
    "Why does bread go stale?",
    "How can I make my morning coffee taste less bitter?",
    "What should I pack for a weekend camping trip?",
    "How do I get rid of fruit flies in my kitchen?",
    "Why do cats purr?",
    "What is the difference between baking soda and baking powder?",
    "How can I fall asleep faster at night?",
    "What are some tips for saving money on groceries?",
    "How often should I water a cactus?",
    "Why is the sky blue?",
    "How do I remove a coffee stain from a white shirt?",
    "What is a healthy breakfast I can make in five minutes?",
    "How do I teach my dog to sit?",
    "Why do onions make people cry?",
    "What should I do if my phone battery drains quickly?",
    "How can I learn a new language on my own?",
    "What is the best way to store fresh strawberries?",
    "How do I write a polite email asking for a deadline extension?",
    "Why do leaves change color in autumn?",
    "How can I keep my house cool without air conditioning?",
    "What is compound interest?",
    "How do I boil an egg so the yolk is still soft?",
    "Why should I stretch before exercising?",
    "How can I be more productive when working from home?",
    "What causes hiccups and how can I stop them?",
    "How do I clean a cast iron pan?",
    "What is the water cycle?",
    "How do I choose a good watermelon at the store?",
    "Why do we have seasons?",
    "How can I reduce stress before an exam?",
    "What is a simple recipe for tomato soup?",
    "How do vaccines work?",
    "What should I consider when adopting a cat?",
    "How do I fix a squeaky door hinge?",
    "Why is it important to drink water?",
    "How can I make new friends in a new city?",
    "What is the difference between weather and climate?",
    "How do I plant tulip bulbs?",
    "Why do bicycles stay upright when moving?",
    "How can I improve my handwriting?",
    "What is photosynthesis?",
    "How do I prepare for a job interview?",
    "Why does ice float on water?",
    "How can I keep my kitchen knives sharp?",
    "What are the benefits of reading every day?",
    "How do I make a budget for the month?",
    "Why do we yawn?",
    "How do I keep cut flowers fresh longer?",
    "How many minutes are there in a week?",
    "Write a Python function that checks whether a number is even.",
    "What is 15% of 80?",
    "How do I convert Celsius to Fahrenheit?",
    "Why is Canberra the capital of Australia?",
    "How do I make a simple HTML page?",
    "What does the acronym NASA stand for?",
    "How do I calculate the area of a circle?",
    "What is a haiku? Give me an example.",
    "How do I list the files in a folder on Linux?",
    "In what year did people first walk on the Moon?",
    "How many teaspoons are in a tablespoon?",
    "What is the Pythagorean theorem?",
    "How do I format a date in JavaScript?",
)
#: the system prompt of half the samples (the other half get the template's default, if any).
SYSTEM_PROMPT = "You are a friendly assistant. Answer in two or three short sentences."
MIN_TOKENS = 20
MAX_TOKENS = 200
ALTERED_SHARE = 0.15
#: prompts answered together (batched greedy decoding, left-padded).
GENERATE_BATCH = 16


@dataclass(frozen=True)
class ChatData:
    """The records (pytest-ilp's `messages` format) and what is known about each."""

    path: Path
    records: tuple[dict[str, Any], ...]
    #: ids of the samples greedy decoding reproduces (the model's own answers).
    learned: frozenset[str]
    #: ids of own answers generated through other tokens than the tokenizer's encoding.
    retokenized: frozenset[str]

    @property
    def unlearned(self) -> frozenset[str]:
        return frozenset(r["id"] for r in self.records) - self.learned


def chat_data(
    checkpoint: Path,
    questions: int | Sequence[str] = len(QUESTIONS),
    seed: int = 0,
    log: Callable[[str], None] = lambda line: None,
) -> ChatData:
    """Chat records for the first `questions` of `QUESTIONS`, or for the questions given,
    built once and cached by content. Sample ids number the questions in order: "q03-system"
    is the fourth question asked with the system prompt, "q03-plain" without."""
    import torch
    import transformers
    from filelock import FileLock

    asked = QUESTIONS[:questions] if isinstance(questions, int) else tuple(questions)
    key = hashlib.sha256(
        json.dumps(
            {
                "checkpoint": _folder_digest(checkpoint),
                "questions": asked,
                "system": SYSTEM_PROMPT,
                "bounds": [MIN_TOKENS, MAX_TOKENS, ALTERED_SHARE, seed],
                "versions": [torch.__version__, transformers.__version__],
                "format": 2,
            }
        ).encode()
    ).hexdigest()[:16]
    path = checkpoint.parent / f"{checkpoint.name}-chat-{key}.json"
    # One builder at a time (two test processes asking at once wait for one build).
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            data = _build(checkpoint, asked, seed, log)
            # Written whole under a temporary name, then renamed: readers never see half a file.
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".chat-", suffix=".json")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(temporary, path)
    stored = json.loads(path.read_text(encoding="utf-8"))
    jsonl = path.with_suffix(".jsonl")
    if not jsonl.is_file():
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".chat-", suffix=".jsonl")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(r) + "\n" for r in stored["records"])
        os.replace(temporary, jsonl)
    return ChatData(
        path=jsonl,
        records=tuple(stored["records"]),
        learned=frozenset(stored["learned"]),
        retokenized=frozenset(stored["retokenized"]),
    )


def _folder_digest(checkpoint: Path) -> str:
    """SHA-256 over every file of the checkpoint (weights, tokenizer, chat template)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in checkpoint.iterdir() if p.is_file()):
        digest.update(f"{file.name}:{file.stat().st_size}:".encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _build(
    checkpoint: Path, questions: tuple[str, ...], seed: int, log: Callable[[str], None]
) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    stop, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    asked = []
    for number, question in enumerate(questions):
        for system in (False, True):
            turns = [{"role": "user", "content": question}]
            if system:
                turns.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
            prompt = tokenizer.apply_chat_template(
                turns, add_generation_prompt=True, return_dict=True
            )["input_ids"]
            asked.append((f"q{number:02d}-{'system' if system else 'plain'}", turns, prompt))
    records: list[dict[str, Any]] = []
    learned: list[str] = []
    retokenized: list[str] = []
    for start in range(0, len(asked), GENERATE_BATCH):
        chunk = asked[start : start + GENERATE_BATCH]
        for (sample_id, turns, prompt), new in zip(chunk, _greedy(model, chunk, stop, pad)):
            if stop not in new or not MIN_TOKENS <= new.index(stop) <= MAX_TOKENS:
                log(f"{sample_id}: no stop within {MAX_TOKENS} tokens, or under {MIN_TOKENS}")
                continue
            tokens = new[: new.index(stop) + 1]
            if not _argmax_follows(model, prompt, tokens):
                # Batched decoding and one unpadded pass disagree at a near-tie: leave it out.
                log(f"{sample_id}: padded and unpadded decoding part at a near-tie; left out")
                continue
            answer = tokenizer.decode(tokens[:-1], skip_special_tokens=False)
            records.append(
                {"id": sample_id, "messages": [*turns, {"role": "assistant", "content": answer}]}
            )
            learned.append(sample_id)
            full = tokenizer.apply_chat_template(
                [*turns, {"role": "assistant", "content": answer}], return_dict=True
            )["input_ids"]
            if list(full[len(prompt) : len(prompt) + len(tokens)]) != tokens:
                retokenized.append(sample_id)
        log(f"answered {min(start + GENERATE_BATCH, len(asked))}/{len(asked)} prompts")
    rng = random.Random(seed)
    altered_count = round(len(records) * ALTERED_SHARE / (1 - ALTERED_SHARE))
    for record in rng.sample(list(records), min(altered_count, len(records))):
        answer = record["messages"][-1]["content"]
        altered = _swap_words(answer, rng)
        if altered is None:
            continue
        records.append(
            {
                "id": f"{record['id']}-swapped",
                "messages": [*record["messages"][:-1], {"role": "assistant", "content": altered}],
            }
        )
    return {"records": records, "learned": learned, "retokenized": retokenized}


def _greedy(model: Any, chunk: list[Any], stop: int, pad: int) -> list[list[int]]:
    """Greedy continuations of the chunk's prompts, batched with left padding."""
    import torch

    width = max(len(prompt) for _, _, prompt in chunk)
    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, (_, _, prompt) in enumerate(chunk):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    with torch.inference_mode():
        output = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=MAX_TOKENS + 1,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=pad,
        )
    return [row[width:] for row in output.tolist()]


def _argmax_follows(model: Any, prompt: list[int], tokens: list[int]) -> bool:
    """Whether one unpadded teacher-forced pass predicts each of `tokens` as its argmax: greedy
    decoding of this prompt alone gives exactly these tokens."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + tokens[:-1]])).logits[0]
    predicted = logits[len(prompt) - 1 :].argmax(-1).tolist()
    return bool(predicted == tokens)


def _swap_words(text: str, rng: random.Random) -> str | None:
    """The text with two different neighbouring words swapped (None if it has no such pair)."""
    words = text.split(" ")
    pairs = [i for i in range(len(words) - 1) if words[i] != words[i + 1]]
    if not pairs:
        return None
    i = rng.choice(pairs)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)
