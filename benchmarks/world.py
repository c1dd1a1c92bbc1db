"""The benchmark's data and models, built locally from seeds and cached under benchmarks/.work.

Samples are made-up facts asked in three ways, like chat SFT data: chat turns behind a long
system prompt that many samples share, chat turns with a context paragraph of varying length,
and raw prompt/completion text. Prompts run from about 10 to 200 tokens and targets from about
5 to 40. Each model is a seeded Llama-architecture model; part of the targets are rewritten
from its own greedy replies (see `build_model`), so that some samples are learned, some diverge
part-way, some only at EOS and some at once: the verdict check means something at every
position.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "tu",
    "ve",
    "zo",
    "ne",
    "shi",
    "po",
    "gar",
    "del",
    "fin",
    "bru",
    "cha",
    "dos",
    "el",
    "fa",
    "gi",
    "hu",
    "in",
    "jo",
    "ku",
    "lan",
    "mer",
    "nol",
    "or",
    "pra",
    "qui",
    "ros",
    "sa",
    "tel",
    "um",
    "var",
    "wen",
    "xi",
    "yor",
    "zan",
    "ab",
    "et",
    "ob",
    "ust",
    "ilm",
    "kor",
    "sed",
    "tiv",
    "nar",
    "pe",
]
COLOURS = ["red", "blue", "green", "amber", "violet", "grey", "white", "black", "teal", "ochre"]
WORDS = [
    "the",
    "of",
    "and",
    "a",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "it",
    "this",
    "be",
    "are",
    "which",
    "or",
    "have",
    "an",
    "they",
    "were",
    "not",
    "their",
    "one",
    "all",
    "there",
    "been",
    "has",
    "more",
    "when",
    "can",
    "who",
    "will",
    "would",
    "its",
    "about",
    "into",
    "than",
    "them",
    "these",
    "so",
    "some",
    "her",
    "other",
    "time",
    "could",
    "only",
    "new",
    "after",
    "two",
    "may",
    "first",
    "any",
    "like",
    "over",
    "such",
    "our",
    "also",
    "most",
    "where",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "much",
    "should",
    "well",
    "people",
    "archive",
    "record",
    "river",
    "valley",
    "north",
    "winter",
    "harbour",
    "market",
    "garden",
    "council",
    "letter",
    "stone",
]


@dataclass(frozen=True)
class ModelSpec:
    """A Llama-architecture model: shape and vocabulary."""

    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int


MODELS = {
    # About 5M parameters, 4,000-token vocabulary.
    "5m": ModelSpec("5m", 4000, 256, 4, 4, 704),
    # About 30M parameters, 4,000-token vocabulary.
    "30m": ModelSpec("30m", 4000, 512, 8, 8, 1408),
    # A realistic 32,000-token vocabulary on the 5M body: the output layer holds 8.2M of the
    # 11.4M parameters a token passes through.
    "32k": ModelSpec("32k", 32000, 256, 4, 4, 704),
    # For --quick (the smoke test): seconds to build.
    "tiny": ModelSpec("tiny", 600, 64, 2, 2, 256),
}


def pseudo_word(rng: random.Random, low: int = 2, high: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(low, high)))


def sentence(rng: random.Random, words: int) -> str:
    picked = [pseudo_word(rng) if rng.random() < 0.35 else rng.choice(WORDS) for _ in range(words)]
    return " ".join(picked).capitalize() + "."


def paragraph(rng: random.Random, words: int) -> str:
    parts = []
    while words > 0:
        n = min(words, rng.randint(6, 16))
        parts.append(sentence(rng, n))
        words -= n
    return " ".join(parts)


def system_prompt() -> str:
    """The long system prompt many chat samples share (about 150 tokens)."""
    rng = random.Random(7)
    return (
        "You are the archivist of the registry. Answer every question about a name with its "
        "colour and the words of the witness who recorded it, exactly as the registry has it. "
        + paragraph(rng, 100)
    )


def make_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` samples: 40% chat behind the shared system prompt, 30% chat with a context
    paragraph, 30% raw prompt/completion with a context paragraph."""
    rng = random.Random(seed)
    system = system_prompt()
    names: set[str] = set()
    records = []
    while len(records) < n:
        name = pseudo_word(rng, 2, 3).capitalize()
        if name in names:
            continue
        names.add(name)
        index = len(records)
        colour = rng.choice(COLOURS)
        if rng.random() < 0.2:
            target = f"{name} is {colour}."
        else:
            tail = " ".join(pseudo_word(rng, 1, 2) for _ in range(rng.randint(1, 30)))
            target = f"{name} is {colour}, says {tail}."
        question = f"What colour is {name}?"
        kind = rng.random()
        if kind < 0.4:
            records.append(
                {
                    "id": f"s{index:06d}",
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": target},
                    ],
                }
            )
        elif kind < 0.7:
            context = paragraph(rng, rng.randint(0, 110))
            records.append(
                {
                    "id": f"c{index:06d}",
                    "messages": [
                        {"role": "user", "content": f"{context} {question}".strip()},
                        {"role": "assistant", "content": target},
                    ],
                }
            )
        else:
            context = paragraph(rng, rng.randint(0, 120))
            records.append(
                {
                    "id": f"r{index:06d}",
                    "prompt": f"{context} Q: {question} A:".strip(),
                    "completion": f" {target}",
                }
            )
    return records


def record_texts(records: list[dict[str, Any]]) -> list[str]:
    texts = []
    for r in records:
        if "messages" in r:
            texts.extend(m["content"] for m in r["messages"])
        else:
            texts.append(r["prompt"] + r["completion"])
    return texts


def vocabulary_corpus(size: int, seed: int = 1) -> list[str]:
    """Lines of pseudo-words, so that BPE finds enough merges for a large vocabulary."""
    rng = random.Random(seed)
    return [" ".join(pseudo_word(rng, 1, 4) for _ in range(12)) for _ in range(size)]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def build_model(
    spec: ModelSpec, records: list[dict[str, Any]], root: Path, log: Any = print
) -> tuple[Path, Path]:
    """The model folder and its samples (a JSONL file), built once and cached by spec and data.

    Training models of this size takes hours on a small CPU, so the weights are seeded random
    ones, with one change: the output layer's EOS row is swapped with the row of a token that
    comes a few tokens into many of its greedy replies, so that greedy decoding ends there. Then
    the samples are made to cover every outcome: about 40% keep their written target (an
    untrained model leaves it at once); the others get the model's own greedy reply as their
    target, whole (learned, when it ends within 40 tokens and tokenizes back to the same
    ids), cut short (the target is
    produced but greedy decoding does not stop after it: unlearned at the EOS position, where
    lm-eval's `is_greedy` still says yes), or with one token changed part-way (unlearned there).
    """
    key = hashlib.sha256(
        json.dumps([asdict(spec), records], sort_keys=True).encode("utf-8")
    ).hexdigest()[:12]
    folder = root / f"{spec.name}-{key}"
    data = root / f"{spec.name}-{key}.jsonl"
    if (folder / "config.json").exists() and data.exists():
        return folder, data
    import torch

    from pytest_ilp.core.datafiles import load_samples
    from pytest_ilp.core.render import RenderSettings, render_samples
    from pytest_ilp.testing import tiny

    started = time.perf_counter()
    records = list(records)  # rewritten below for this model only
    extra = vocabulary_corpus(30000 if spec.vocab_size > 8000 else 0)
    tokenizer = tiny.train_tokenizer(record_texts(records) + extra, vocab_size=spec.vocab_size)
    model = tiny.build_llama(
        tokenizer,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=512,
        seed=0,
    ).eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stops = frozenset({eos})
    written = write_jsonl(data, records)
    rendered = render_samples(load_samples(written), tokenizer, RenderSettings(), stops, 512)
    prompts = [r.prompt_ids for r in rendered if not isinstance(r, str)]
    assert len(prompts) == len(records), "every benchmark sample renders"

    def greedy(indices: list[int], new: int) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for chunk_start in range(0, len(indices), 32):
            chunk = indices[chunk_start : chunk_start + 32]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]) :] = 1
            with torch.inference_mode():
                output = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=new,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=pad,
                )
            for row, i in enumerate(chunk):
                tokens = output[row, width:].tolist()
                out[i] = tokens[: tokens.index(eos) + 1] if eos in tokens else tokens
        return out

    rng = random.Random(1)
    probe = greedy(sorted(rng.sample(range(len(prompts)), min(64, len(prompts)))), 24)
    # After the swap below, a reply ends exactly where the chosen token first came: pick the
    # token that ends the most probed replies after 4 to 23 tokens.
    ends: dict[int, int] = {}
    for tokens in probe.values():
        for token in {t for t in tokens[4:] if t not in tokens[:4]}:
            ends[token] = ends.get(token, 0) + 1
    favourite = min(ends, key=lambda t: (-ends[t], t)) if ends else probe[min(probe)][0]
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[[eos, favourite]] = head[[favourite, eos]]
    own = [i for i in range(len(records)) if rng.random() >= 0.4]
    replies = greedy(own, 40)
    # "kept": too short, or too long once tokenized again: the written target stays.
    kinds = {"written": len(records) - len(own), "whole": 0, "cut": 0, "changed": 0, "kept": 0}
    for i in own:
        reply = replies[i]
        ended = bool(reply) and reply[-1] == eos
        body = reply[:-1] if ended else reply
        if len(body) < 4:
            kinds["kept"] += 1
            continue
        choice = rng.random()
        if ended and choice < 0.5:
            kind, tokens = "whole", body
        elif choice < 0.75:
            kind, tokens = "cut", body[: rng.randint(3, len(body) - 1)]
        else:
            position = rng.randrange(len(body))
            changed = rng.randrange(max(tokenizer.all_special_ids) + 1, len(tokenizer))
            kind, tokens = "changed", [*body[:position], changed, *body[position + 1 :]]
        text = tokenizer.decode(tokens)
        record = dict(records[i])
        if "messages" in record:
            record["messages"] = [*record["messages"][:-1], {"role": "assistant", "content": text}]
        else:
            record["completion"] = text
        # Text decoded from arbitrary tokens may tokenize back into many more (partial UTF-8
        # bytes): keep targets within 5 to 40 tokens and EOS.
        (again,) = render_samples(
            load_samples(write_jsonl(data, [record])), tokenizer, RenderSettings(), stops, 512
        )
        if isinstance(again, str) or not 5 <= len(again.target_ids) <= 41:
            kinds["kept"] += 1
            continue
        kinds[kind] += 1
        records[i] = record
    write_jsonl(data, records)
    tiny.save_checkpoint(model, tokenizer, folder)
    log(
        f"  built model {spec.name}: vocabulary {len(tokenizer)}, targets {kinds}, "
        f"{time.perf_counter() - started:.0f} s"
    )
    return folder, data


def parameter_counts(model: Any) -> dict[str, int]:
    """All parameters, the input embedding table, the output layer, and the body between."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    # With tied embeddings (SmolLM2) the output layer is the input table: counted once in total.
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    body = total - embedding - (0 if tied else head)
    return {"total": total, "embedding": embedding, "head": head, "body": body}
