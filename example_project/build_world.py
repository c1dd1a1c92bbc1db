"""Build the example world: a made-up world, a base model that knows it, two SFT stages.

    python example_project/build_world.py                  # into example_project/artifacts
    python example_project/build_world.py --size small --out /tmp/world

Everything is made here, seeded, on the CPU, in a few minutes on 2 cores: no download.

1. The world: countries (capital, flag colour) and people (birthplace, birth year), with
   made-up names that differ from each other in at least 3 letters.
2. A pre-training corpus of statements about the world in two phrasings, a sentence and the
   question/answer form the SFT data uses. Every fact is stated many times, except the
   birthplaces held back for the missing-knowledge samples, which are never stated at all.
3. A byte-level BPE tokenizer trained on that corpus (with a chat template), and a Llama model
   pre-trained on it: the base model.
4. The SFT data (prompt/completion JSONL, `stage` and `meta.planted_cause` on every record) and
   two sequential SFT stages, saved with `save_pretrained` as stage1 and stage2 (the final
   checkpoint).

Each planted cause is decided by how its samples' data was made, never by what a model did:

==================  ======================================================================
missing_knowledge   "Where was P born?" for people whose birthplace the corpus never states
knowledge_conflict  "What is the capital of C?" answered with another country's capital,
                    while the corpus states the true capital many times
data_inconsistency  groups of 3 near-identical "In which year was P born?" prompts (two
                    identical, one with another function word) with 3 different years, one
                    of them the true one
forgetting          stage-1 flag-colour questions answered with the colour alone; stage 2
                    answers flag-colour questions (of other countries) with a full stop,
                    " red.", and replays every other stage-1 sample, but not these
under_optimization  "Write 'CITY, COUNTRY' in the old script.": a letter-by-letter
                    transliteration into Greek capitals, ~30 byte-level tokens that never occur
                    in the pre-training corpus
clean               questions about facts the corpus states, in the stage's answer style
                    (often about the entities of a planted subset, on another topic)
==================  ======================================================================

The model is small (a 2-layer Llama, 0.8M parameters) so that pre-training, the bulk of the
build, runs on one CPU thread in float32: robust on a busy or AVX2-only machine (see
benchmarks/README.md, "Building the example world").

At the end the build scores every sample with `pytest_ilp.api.score_checkpoint` on the base,
stage-1 and final checkpoints and prints how the world behaves (learned share per subset, ...);
the same figures go to `world.json` in the output folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "artifacts"
#: written last: a folder without it (or with another source hash) is an unfinished build.
STAMP = "world.json"
CAUSES = (
    "missing_knowledge",
    "knowledge_conflict",
    "data_inconsistency",
    "forgetting",
    "under_optimization",
)
STAGES = ("stage1", "stage2")
#: torch threads of the build. One: on a CPU that other processes share, two threads wait for
#: each other at every kernel and ran 5-8x slower per step than one (benchmarks/README.md,
#: "Building the example world"); this model is too small to gain much from two on idle cores.
THREADS = 1


@dataclass(frozen=True)
class Size:
    """How big the world, the model and the training runs are."""

    #: samples per planted cause (data_inconsistency: rounded down to groups of 3).
    planted: int
    #: countries beyond the planted ones, each asked about capital and flag colour (clean).
    extra_countries: int
    #: people beyond the planted ones, each asked about birthplace and birth year (clean).
    extra_people: int
    #: statements of each known fact in the corpus; the facts the conflict samples contradict
    #: are stated `conflict_boost` times as often.
    statements_per_fact: int
    conflict_boost: int
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    window: int
    pretrain_batch: int
    pretrain_epochs: int
    pretrain_lr: float
    sft_batch: int
    stage1_epochs: int
    stage1_lr: float
    stage2_epochs: int
    stage2_lr: float


SIZES = {
    "full": Size(
        planted=42,
        extra_countries=30,
        extra_people=35,
        statements_per_fact=12,
        conflict_boost=4,
        vocab_size=1200,
        hidden_size=128,
        num_layers=2,
        num_heads=2,
        window=128,
        pretrain_batch=16,
        pretrain_epochs=32,
        pretrain_lr=5e-3,
        sft_batch=16,
        stage1_epochs=5,
        stage1_lr=1e-3,
        stage2_epochs=3,
        stage2_lr=1e-3,
    ),
    # For the determinism test: the same recipe, seconds instead of minutes.
    "small": Size(
        planted=6,
        extra_countries=4,
        extra_people=6,
        statements_per_fact=6,
        conflict_boost=2,
        vocab_size=400,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        window=64,
        pretrain_batch=16,
        pretrain_epochs=2,
        pretrain_lr=3e-3,
        sft_batch=8,
        stage1_epochs=20,
        stage1_lr=3e-3,
        stage2_epochs=20,
        stage2_lr=3e-3,
    ),
}

# -- the made-up world -------------------------------------------------------------------------

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "tr")
VOWELS = ("a", "e", "i", "o", "u")
SUFFIXES = {
    "country": ("via", "land", "mark", "stan", "ria"),
    "city": ("mar", "ton", "grad", "holm", "port"),
    "person": ("en", "is", "ok", "ard", "ina"),
}
COLOURS = ("red", "blue", "green", "amber", "violet", "grey", "white", "black", "gold", "teal")
#: the old script of the under-optimization samples: Latin letters to Greek capitals.
OLD_SCRIPT = dict(zip("abcdefghijklmnopqrstuvwxyz", "ΑΒΞΔΕΦΓΗΙϘΚΛΜΝΟΠϞΡΣΤΥϜΩΧΨΖ"))


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    colour: str


@dataclass(frozen=True)
class Person:
    name: str
    birthplace: str
    born: int


@dataclass
class World:
    countries: list[Country]
    people: list[Person]
    #: people whose birthplace the pre-training corpus never states.
    unstated_birthplaces: set[str] = field(default_factory=set)
    #: countries whose capital the conflict samples contradict (stated more often).
    boosted_capitals: set[str] = field(default_factory=set)


def deletions(word: str, depth: int = 2) -> set[str]:
    """Every string made by deleting up to `depth` letters from `word`."""
    found = {word}
    frontier = {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        found |= frontier
    return found


def make_names(rng: random.Random, counts: dict[str, int]) -> dict[str, list[str]]:
    """Unique names per kind, every two at least 3 edits apart (no accidental near-duplicates).

    Two words within 2 edits share a string obtained by deleting up to 2 letters from each
    (symmetric deletion), so a name whose deletions meet none taken so far is 3 edits away
    from all of them.
    """
    taken: set[str] = set()
    names: dict[str, list[str]] = {kind: [] for kind in counts}
    for kind, count in counts.items():
        while len(names[kind]) < count:
            stem = "".join(
                rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(1, 2))
            )
            name = (stem + rng.choice(SUFFIXES[kind])).capitalize()
            variants = deletions(name.lower())
            if taken.isdisjoint(variants):
                taken |= variants
                names[kind].append(name)
    return names


def make_world(size: Size, rng: random.Random) -> World:
    # Countries: the conflict and the forgetting subsets. People: the missing-knowledge and the
    # inconsistency subsets, and the extra ones (see `plan_sft`).
    countries = 2 * size.planted + size.extra_countries
    people = size.planted + size.planted // 3 + size.extra_people
    names = make_names(rng, {"country": countries, "city": countries, "person": people})
    countries = [
        Country(name, capital, rng.choice(COLOURS))
        for name, capital in zip(names["country"], names["city"])
    ]
    cities = [c.capital for c in countries]
    people = [Person(name, rng.choice(cities), rng.randint(1600, 1999)) for name in names["person"]]
    return World(countries, people)


# -- the pre-training corpus -------------------------------------------------------------------

# Two phrasings per topic, a statement and the question/answer form of the SFT prompts: a base
# model that has read quizzes answers "Q: ...\nA:" with the fact (and, unlike after SFT, goes
# on with a full stop instead of ending its turn).
TEMPLATES = {
    "capital": ("The capital of {c} is {v}.", "Q: What is the capital of {c}?\nA: {v}."),
    "colour": ("The flag of {c} is {v}.", "Q: What colour is the flag of {c}?\nA: {v}."),
    "birthplace": ("{c} was born in {v}.", "Q: Where was {c} born?\nA: {v}."),
    "born": ("{c} was born in the year {v}.", "Q: In which year was {c} born?\nA: {v}."),
}
QUESTIONS = {
    "capital": "Q: What is the capital of {c}?\nA:",
    "colour": "Q: What colour is the flag of {c}?\nA:",
    "birthplace": "Q: Where was {c} born?\nA:",
    "born": "Q: In which year was {c} born?\nA:",
}
#: the near-duplicate rewordings of the data-inconsistency groups (same entity, same question).
BORN_VARIANTS = (
    "Q: In which year was {c} born?\nA:",
    "Q: In which year was {c} born?\nA:",
    "Q: In what year was {c} born?\nA:",
)


def facts(world: World) -> list[tuple[str, str, str]]:
    """Every stated fact as (topic, entity, value)."""
    rows = []
    for c in world.countries:
        rows += [("capital", c.name, c.capital), ("colour", c.name, c.colour)]
    for p in world.people:
        if p.name not in world.unstated_birthplaces:
            rows.append(("birthplace", p.name, p.birthplace))
        rows.append(("born", p.name, str(p.born)))
    return rows


def corpus_statements(world: World, size: Size, rng: random.Random) -> list[str]:
    """Each fact `statements_per_fact` times, cycling through its phrasings, shuffled."""
    statements = []
    for topic, entity, value in facts(world):
        repeats = size.statements_per_fact
        if topic == "capital" and entity in world.boosted_capitals:
            repeats *= size.conflict_boost
        templates = TEMPLATES[topic]
        for i in range(repeats):
            statements.append(templates[i % len(templates)].format(c=entity, v=value))
    rng.shuffle(statements)
    return statements


def documents(statements: Sequence[str], rng: random.Random) -> list[str]:
    """Statements grouped into short documents (3 to 8 lines each)."""
    docs = []
    i = 0
    while i < len(statements):
        n = rng.randint(3, 8)
        docs.append("\n".join(statements[i : i + n]))
        i += n
    return docs


# -- the SFT data ------------------------------------------------------------------------------


def record(
    prompt: str, completion: str, stage: str, cause: str | None, topic: str, **meta: Any
) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "completion": completion,
        "stage": stage,
        "meta": {"planted_cause": cause, "topic": topic, **meta},
    }


def old_script(text: str) -> str:
    return "".join(OLD_SCRIPT.get(ch, ch) for ch in text.lower())


def plan_sft(world: World, size: Size, rng: random.Random) -> list[dict[str, Any]]:
    """The SFT records. Each planted subset has its own entities; clean samples ask about the
    other topic of those entities (and about extra people), as real SFT data asks many things
    about the same entities:

    ======================  ===============================  ================================
    entities                planted                          clean
    ======================  ===============================  ================================
    countries A (n)         capital contradicted (conflict)  flag colour, stage 2 style
    countries B (n)         flag colour, stage 1 (forgotten) capital
    countries E (extra)                                      capital, flag colour as for A
    people C (n)            birthplace never stated          birth year
    people D (n/3)          birth year, 3 near-duplicates    birthplace
    people F (extra)                                         birthplace and birth year
    ======================  ===============================  ================================

    Decides `world.unstated_birthplaces` and `world.boosted_capitals` (the corpus is written
    after this). Every (entity, topic) question is asked once, except inside the groups of
    near-duplicates planted for data inconsistency. Clean samples alternate between the stages,
    except flag colours, whose answers with a full stop are stage 2's style.
    """
    countries = list(world.countries)
    people = list(world.people)
    rng.shuffle(countries)
    rng.shuffle(people)
    n = size.planted
    conflict, forgotten, extra_countries = countries[:n], countries[n : 2 * n], countries[2 * n :]
    missing, groups, extra = people[:n], people[n : n + n // 3], people[n + n // 3 :]
    records: list[dict[str, Any]] = []
    clean: list[tuple[str, str, str]] = []  # (topic, question, answer) in stage-alternating order

    for c in conflict:
        wrong = rng.choice([o.capital for o in world.countries if o.name != c.name])
        world.boosted_capitals.add(c.name)
        records.append(
            record(
                QUESTIONS["capital"].format(c=c.name),
                f" {wrong}",
                "stage2",
                "knowledge_conflict",
                "capital",
            )
        )
        records.append(
            record(
                QUESTIONS["colour"].format(c=c.name),
                f" {c.colour}.",
                "stage2",
                None,
                "colour",
            )
        )
    for c in forgotten:
        records.append(
            record(
                QUESTIONS["colour"].format(c=c.name),
                f" {c.colour}",
                "stage1",
                "forgetting",
                "colour",
            )
        )
        clean.append(("capital", QUESTIONS["capital"].format(c=c.name), c.capital))

    for c in extra_countries:
        clean.append(("capital", QUESTIONS["capital"].format(c=c.name), c.capital))
        records.append(
            record(
                QUESTIONS["colour"].format(c=c.name),
                f" {c.colour}.",
                "stage2",
                None,
                "colour",
            )
        )

    for p in missing:
        world.unstated_birthplaces.add(p.name)
        records.append(
            record(
                QUESTIONS["birthplace"].format(c=p.name),
                f" {p.birthplace}",
                "stage2",
                "missing_knowledge",
                "birthplace",
            )
        )
        clean.append(("born", QUESTIONS["born"].format(c=p.name), str(p.born)))
    years = [str(y) for y in range(1600, 2000)]
    for number, p in enumerate(groups):
        others = rng.sample([y for y in years if y != str(p.born)], 2)
        targets = [str(p.born), *others]
        rng.shuffle(targets)
        for variant, target in zip(BORN_VARIANTS, targets):
            records.append(
                record(
                    variant.format(c=p.name),
                    f" {target}",
                    "stage2",
                    "data_inconsistency",
                    "born",
                    group=f"g{number:02d}",
                )
            )
        clean.append(("birthplace", QUESTIONS["birthplace"].format(c=p.name), p.birthplace))
    for p in extra:
        clean.append(("birthplace", QUESTIONS["birthplace"].format(c=p.name), p.birthplace))
        clean.append(("born", QUESTIONS["born"].format(c=p.name), str(p.born)))
    rng.shuffle(clean)
    for index, (topic, question, answer) in enumerate(clean):
        records.append(record(question, f" {answer}", STAGES[index % 2], None, topic))

    # Under-optimization: a skill, not a fact; the pairs are drawn from the whole world.
    for c in rng.sample(world.countries, n):
        text = f"{c.capital}, {c.name}"
        records.append(
            record(
                f"Q: Write '{text}' in the old script.\nA:",
                f" {old_script(text)}",
                "stage2",
                "under_optimization",
                "old_script",
            )
        )

    # Stage 2 replays every stage-1 sample except the forgetting ones (whose style it changes).
    for r in records:
        r["meta"]["replayed"] = r["stage"] == "stage1" and r["meta"]["planted_cause"] is None
    # Neutral ids and a shuffled order within each stage: nothing but `meta` names the subset.
    ordered = []
    for stage in STAGES:
        part = [r for r in records if r["stage"] == stage]
        rng.shuffle(part)
        ordered += part
    return [{"id": f"q{i:04d}", **r} for i, r in enumerate(ordered, start=1)]


# -- training ----------------------------------------------------------------------------------


def setup_torch(threads: int) -> None:
    """The same arithmetic on every run: fixed thread count, deterministic kernels."""
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def pack(ids: Sequence[int], window: int) -> list[list[int]]:
    """Cut one token stream into windows of `window` tokens (the tail is dropped)."""
    return [list(ids[i : i + window]) for i in range(0, len(ids) - window + 1, window)]


def pretrain(
    model: Any, windows: list[list[int]], size: Size, seed: int, log: Callable[[str], None]
) -> list[float]:
    """Plain language modelling over packed windows: AdamW, warm-up then cosine decay."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    steps_per_epoch = math.ceil(len(windows) / size.pretrain_batch)
    total = steps_per_epoch * size.pretrain_epochs
    warmup = max(1, total // 20)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=size.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.98)
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
        ),
    )
    model.train()
    losses = []
    for epoch in range(size.pretrain_epochs):
        order = list(range(len(windows)))
        rng.shuffle(order)
        for start in range(0, len(order), size.pretrain_batch):
            batch = torch.tensor([windows[i] for i in order[start : start + size.pretrain_batch]])
            # float32 throughout: bfloat16 autocast was twice as fast on a CPU with AVX-512
            # BF16, but 8x slower on one without (AVX2 only), where it is emulated.
            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        log(f"  pre-training epoch {epoch + 1}/{size.pretrain_epochs}: loss {losses[-1]:.3f}")
    model.eval()
    return losses


def sft_examples(tokenizer: Any, records: Iterable[dict[str, Any]]) -> list[tuple[list[int], int]]:
    """(ids, loss start) as TRL renders prompt/completion data: prompt + completion + EOS, the
    loss on the completion only; the same rule pytest-ilp's raw rendering checks."""
    records = list(records)
    prompts = tokenizer([r["prompt"] for r in records])["input_ids"]
    fulls = tokenizer([r["prompt"] + r["completion"] + tokenizer.eos_token for r in records])[
        "input_ids"
    ]
    return [(full, len(prompt)) for prompt, full in zip(prompts, fulls)]


def sft_stage(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    *,
    stage: str,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    first_epoch: int,
    train_log: list[dict[str, Any]],
) -> list[float]:
    """Completion-only SFT with AdamW and a linearly decaying learning rate (TRL's defaults).

    Appends every sample's training loss of each epoch (mean nats per target token, as seen in
    the step that trained on it) to `train_log`, numbering epochs on from `first_epoch`: the
    per-sample log a trainer can write, which pytest-ilp reads as `train_log`.
    """
    import torch
    import torch.nn.functional as F

    examples = sft_examples(tokenizer, records)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    total = epochs * math.ceil(len(examples) / batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / total)
    model.train()
    losses = []
    for epoch in range(epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        epoch_loss: dict[int, float] = {}
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            width = max(len(examples[i][0]) for i in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                full, loss_start = examples[i]
                ids[row, : len(full)] = torch.tensor(full)
                attention[row, : len(full)] = 1
                labels[row, loss_start : len(full)] = torch.tensor(full[loss_start:])
            logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
            targets = labels[:, 1:]
            token_loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            ).view(targets.shape)  # [batch, width - 1], 0 where ignored
            counts = (targets != -100).sum(dim=1)
            loss = token_loss.sum() / counts.sum()  # the token mean, as transformers computes
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            for row, i in enumerate(chunk):
                epoch_loss[i] = (token_loss[row].sum() / counts[row]).item()
        for i, value in sorted(epoch_loss.items()):
            train_log.append(
                {
                    "id": records[i]["id"],
                    "epoch": first_epoch + epoch,
                    "stage": stage,
                    "loss": round(value, 5),
                }
            )
    model.eval()
    return losses


# -- measuring ---------------------------------------------------------------------------------


def greedy_answers(
    folder: Path, prompts: Sequence[str], max_new_tokens: int = 8, batch: int = 64
) -> list[str]:
    """What `model.generate` (greedy) answers to each prompt, up to the end of the first line
    or sentence: the base model's answer, which does not stop with EOS."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_ilp.core.backends.loading import quiet_loading

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    with quiet_loading():  # no "Loading weights" bar in the main job's output
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    answers = []
    for start in range(0, len(prompts), batch):
        encoded = tokenizer(list(prompts[start : start + batch]), return_tensors="pt", padding=True)
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        width = encoded["input_ids"].shape[1]
        for row in output[:, width:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            answers.append(text.split("\n")[0].split(".")[0].strip())
    return answers


def measure(
    out: Path, records: list[dict[str, Any]], world: World, log: Callable[[str], None]
) -> dict[str, Any]:
    """The figures that show the world behaves as planted (see the README)."""
    from pytest_ilp.api import score_checkpoint

    data = out / "sft.jsonl"
    verdicts = {name: score_checkpoint(out / name, data) for name in ("base", *STAGES)}
    subsets: dict[str, list[dict[str, Any]]] = {"clean": []}
    for cause in CAUSES:
        subsets[cause] = []
    for r in records:
        subsets[r["meta"]["planted_cause"] or "clean"].append(r)

    def share(name: str, subset: str, learned: bool = True) -> float:
        rows = subsets[subset]
        hits = sum(verdicts[name][r["id"]].learned == learned for r in rows)
        return hits / len(rows)

    figures: dict[str, Any] = {"subsets": {}}
    for subset, rows in subsets.items():
        target_tokens = [len(verdicts["stage2"][r["id"]].target_ids) for r in rows]
        figures["subsets"][subset] = {
            "samples": len(rows),
            "learned_final": share("stage2", subset),
            "learned_stage1": share("stage1", subset),
            "learned_base": share("base", subset),
            "mean_target_tokens": sum(target_tokens) / len(rows),
            "mean_base_nll": sum(verdicts["base"][r["id"]].nll for r in rows) / len(rows),
            "mean_final_nll": sum(verdicts["stage2"][r["id"]].nll for r in rows) / len(rows),
        }
    # The base model's own answer to the conflict questions: the fact the corpus states?
    capitals = {c.name: c.capital for c in world.countries}
    conflict = subsets["knowledge_conflict"]
    entities = [r["prompt"].split("capital of ")[1].split("?")[0] for r in conflict]
    answers = greedy_answers(out / "base", [r["prompt"] for r in conflict])
    base_fact = sum(a == capitals[e] for a, e in zip(answers, entities)) / len(conflict)
    final = [verdicts["stage2"][r["id"]] for r in conflict]
    produced_fact = sum(
        (v.produced or "").strip() == capitals[e] for v, e in zip(final, entities)
    ) / len(conflict)
    # And how well the base model knows the facts the clean samples ask about.
    clean_short = [r for r in subsets["clean"] if r["meta"]["topic"] != "colour"]
    clean_answers = greedy_answers(out / "base", [r["prompt"] for r in clean_short])
    base_knows = sum(a == r["completion"].strip() for a, r in zip(clean_answers, clean_short))
    figures["conflict_base_answers_fact"] = base_fact
    figures["conflict_final_produces_fact"] = produced_fact
    figures["clean_base_answers_fact"] = base_knows / len(clean_short)
    figures["verdicts"] = {
        name: {i: v.learned for i, v in sorted(by_id.items())} for name, by_id in verdicts.items()
    }
    return figures


BARS = (
    (
        "clean learned by the final checkpoint",
        lambda f: f["subsets"]["clean"]["learned_final"],
        0.97,
    ),
    *(
        (
            f"{cause} unlearned by the final checkpoint",
            lambda f, c=cause: 1 - f["subsets"][c]["learned_final"],
            0.60,
        )
        for cause in CAUSES
    ),
    (
        "forgetting learned at stage 1",
        lambda f: f["subsets"]["forgetting"]["learned_stage1"],
        0.80,
    ),
    ("conflict: base answers the corpus fact", lambda f: f["conflict_base_answers_fact"], 0.80),
)


def report_lines(figures: dict[str, Any], timings: dict[str, float]) -> list[str]:
    lines = [
        f"{'subset':<20}{'samples':>8}{'base':>8}{'stage1':>8}{'final':>8}"
        f"{'tokens':>8}{'base nll':>10}",
    ]
    for subset, row in figures["subsets"].items():
        lines.append(
            f"{subset:<20}{row['samples']:>8}{row['learned_base']:>8.0%}"
            f"{row['learned_stage1']:>8.0%}{row['learned_final']:>8.0%}"
            f"{row['mean_target_tokens']:>8.1f}{row['mean_base_nll']:>10.2f}"
        )
    lines.append("(shares learned: greedy decoding reproduces target + EOS)")
    lines.append(
        f"base model answers the corpus fact: clean {figures['clean_base_answers_fact']:.0%}, "
        f"conflict {figures['conflict_base_answers_fact']:.0%}; final checkpoint produces the "
        f"corpus fact on {figures['conflict_final_produces_fact']:.0%} of the conflict samples"
    )
    for name, value, bar in BARS:
        figure = value(figures)
        verdict = "ok" if figure >= bar else "MISSED"
        lines.append(f"  {verdict:<7}{name}: {figure:.0%} (bar {bar:.0%})")
    lines.append(
        "timings: " + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in timings.items())
    )
    return lines


# -- the build ---------------------------------------------------------------------------------


def source_hash(size_name: str, seed: int) -> str:
    """What a build depends on: this file, the size and the seed (the stamp records it)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"{size_name}:{seed}".encode())
    return digest.hexdigest()[:16]


def is_built(out: Path, size_name: str = "full", seed: int = 0) -> bool:
    stamp = out / STAMP
    if not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text(encoding="utf-8"))["source"] == source_hash(
            size_name, seed
        )
    except (ValueError, KeyError):
        return False


def build(
    out: Path,
    size_name: str = "full",
    seed: int = 0,
    log: Callable[[str], None] = print,
    check: bool = True,
    threads: int = THREADS,
) -> dict[str, Any]:
    """Build the whole world into `out` and return the figures (also in `out/world.json`)."""
    from pytest_ilp.testing import tiny

    size = SIZES[size_name]
    setup_torch(threads)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[phase] = now - clock
        clock = now

    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).unlink(missing_ok=True)
    rng = random.Random(seed)
    world = make_world(size, rng)
    records = plan_sft(world, size, rng)
    statements = corpus_statements(world, size, rng)
    docs = documents(statements, rng)
    (out / "pretraining_corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    (out / "sft.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    (out / "world_facts.json").write_text(
        json.dumps(
            {
                "countries": [asdict(c) for c in world.countries],
                "people": [asdict(p) for p in world.people],
                "birthplaces_never_stated": sorted(world.unstated_birthplaces),
            },
            indent=1,
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    log(
        f"world: {len(world.countries)} countries, {len(world.people)} people, "
        f"{len(statements)} statements in {len(docs)} documents, {len(records)} SFT samples"
    )

    tokenizer = tiny.train_tokenizer(docs, vocab_size=size.vocab_size)
    stream: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=True)["input_ids"]:
        stream += [*ids, tokenizer.eos_token_id]
    windows = pack(stream, size.window)
    model = tiny.build_llama(
        tokenizer,
        hidden_size=size.hidden_size,
        num_layers=size.num_layers,
        num_heads=size.num_heads,
        max_position_embeddings=256,
        seed=seed,
    )
    parameters = sum(p.numel() for p in model.parameters())
    log(
        f"tokenizer: {len(tokenizer)} tokens; corpus {len(stream)} tokens in {len(windows)} "
        f"windows; model {parameters / 1e6:.2f}M parameters"
    )
    lap("world+tokenizer")
    pretrain(model, windows, size, seed, log)
    tiny.save_checkpoint(model, tokenizer, out / "base")
    lap("pre-training")

    stage1 = [r for r in records if r["stage"] == "stage1"]
    stage2 = [r for r in records if r["stage"] == "stage2" or r["meta"]["replayed"]]
    train_log: list[dict[str, Any]] = []
    for name, data, epochs, lr in (
        ("stage1", stage1, size.stage1_epochs, size.stage1_lr),
        ("stage2", stage2, size.stage2_epochs, size.stage2_lr),
    ):
        losses = sft_stage(
            model,
            tokenizer,
            data,
            stage=name,
            epochs=epochs,
            lr=lr,
            batch=size.sft_batch,
            seed=seed,
            first_epoch=len({row["epoch"] for row in train_log}) + 1,
            train_log=train_log,
        )
        tiny.save_checkpoint(model, tokenizer, out / name)
        log(f"  {name}: {len(data)} samples x {epochs} epochs, last loss {losses[-1]:.3f}")
        lap(name)

    (out / "train_log.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in train_log), encoding="utf-8"
    )
    figures = measure(out, records, world, log)
    lap("measuring")
    for line in report_lines(figures, timings):
        log(line)
    stamp = {
        "source": source_hash(size_name, seed),
        "size": size_name,
        "seed": seed,
        "parameters": parameters,
        "timings_s": timings,
        **figures,
    }
    (out / STAMP).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
    return stamp


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artefact folder")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    stamp = build(args.out, args.size, args.seed)
    print(f"built {args.out} in {time.perf_counter() - started:.0f} s")
    missed = [name for name, value, bar in BARS if value(stamp) < bar]
    return 1 if missed and args.size == "full" else 0


if __name__ == "__main__":
    sys.exit(main())
