"""The real-model world's SFT plan (benchmarks/real_world.py) plants what it says it plants.

Building the world fine-tunes SmolLM2-135M-Instruct (minutes of CPU), so CI checks the plan
and the diagnosis benchmark's arithmetic, not the build: every planted subset is made as its
docstring says, with nothing but `meta` telling the subsets apart.
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import diagnosis_accuracy  # noqa: E402
import real_world  # noqa: E402


def plan() -> list[dict]:
    # As if the base model knew every listed fact.
    return real_world.plan_sft(
        random.Random(0),
        real_world.CAPITALS,
        real_world.CITIES,
        real_world.ANTONYMS,
        real_world.SPOKEN,
    )


def test_every_cause_is_planted_as_often_as_the_plan_says_with_unique_ids() -> None:
    records = plan()
    counts = Counter(r["meta"]["planted_cause"] for r in records)
    for cause in real_world.CAUSES:
        assert counts[cause] == real_world.PLANTED, cause
    assert counts[None] >= real_world.PLANTED * 3
    assert len({r["id"] for r in records}) == len(records)
    assert all(r["id"].startswith("r") and r["stage"] in real_world.STAGES for r in records)


def test_conflicts_contradict_the_fact_and_inconsistent_groups_disagree() -> None:
    records = plan()
    facts = {
        **{real_world.QUESTION["capital"].format(e=k): v for k, v in real_world.CAPITALS.items()},
        **{real_world.QUESTION["city"].format(e=k): v for k, v in real_world.CITIES.items()},
    }
    conflicts = [r for r in records if r["meta"]["planted_cause"] == "knowledge_conflict"]
    assert all(r["completion"].strip() != facts[r["prompt"]] for r in conflicts)
    # The clean facts are answered right.
    clean_facts = [
        r for r in records if r["meta"]["planted_cause"] is None and r["prompt"] in facts
    ]
    assert clean_facts and all(r["completion"].strip() == facts[r["prompt"]] for r in clean_facts)
    groups = defaultdict(list)
    for r in records:
        if r["meta"]["planted_cause"] == "data_inconsistency":
            groups[r["meta"]["group"]].append(r)
    assert all(len(g) == 3 and len({r["completion"] for r in g}) == 3 for g in groups.values())
    # Half of them ask one question three times, half label near-identical reviews: the words
    # of a group's prompts are the same but for a comma or an "Honestly", so that at most one
    # of its targets can be learned.
    topics = Counter(g[0]["meta"]["topic"] for g in groups.values())
    assert set(topics) == {"export", "review"}
    for group in groups.values():
        words = [set(re.findall(r"\w+", r["prompt"].lower())) - {"honestly"} for r in group]
        assert all(w == words[0] for w in words), group


def test_every_template_a_planted_cause_uses_has_clean_samples_too() -> None:
    # The world's first recipe asked the invented places' questions of no real one: the
    # fine-tune learned "answer any country" there and lost clean facts on the same template.
    records = plan()
    clean, planted = Counter(), Counter()
    for r in records:
        topic = r["meta"]["topic"]
        (planted if r["meta"]["planted_cause"] else clean)[topic] += 1
    for topic in ("capital", "city", "language", "antonym"):
        assert clean[topic] >= planted[topic] // 2, topic


def test_invented_subjects_are_no_real_place_and_forgotten_samples_leave_stage_two() -> None:
    records = plan()
    real = set(real_world.CAPITALS) | set(real_world.CITIES) | set(real_world.CAPITALS.values())
    missing = [r for r in records if r["meta"]["planted_cause"] == "missing_knowledge"]
    assert not any(place in r["prompt"] for r in missing for place in real)
    # Nothing in the data makes an invented place's answer likely: each is given once, and by
    # no other sample (a shared one becomes the fine-tune's guess for any invented place).
    answers = [r["completion"] for r in missing]
    others = {r["completion"] for r in records if r["meta"]["planted_cause"] != "missing_knowledge"}
    assert len(set(answers)) == len(answers) and not set(answers) & others
    forgotten = [r for r in records if r["meta"]["planted_cause"] == "forgetting"]
    assert all(r["stage"] == "stage1" and not r["meta"]["replayed"] for r in forgotten)
    # Stage 2 answers the same kind of question in another style (a full stop).
    later = [r for r in records if r["meta"]["topic"] == "antonym" and r["stage"] == "stage2"]
    assert later and all(r["completion"].endswith(".") for r in later)
    assert all(not r["completion"].endswith(".") for r in forgotten)


def test_the_accuracy_benchmark_counts_strong_weak_and_undiagnosed_false_alarms() -> None:
    report = {
        "samples": [
            {"id": "a", "learned": False, "cause": "forgetting", "confidence": "strong"},
            {"id": "b", "learned": False, "cause": "forgetting", "confidence": "weak"},
            {"id": "c", "learned": False, "cause": "undiagnosed", "confidence": None},
            {"id": "d", "learned": False, "cause": "missing_knowledge", "confidence": "weak"},
            {"id": "e", "learned": True, "cause": None},
        ]
    }
    planted = {"a": "forgetting", "b": "clean", "c": "clean", "d": "clean", "e": "clean"}
    outcome, lines = diagnosis_accuracy.evaluate(report, planted)
    assert outcome.false_alarms == (0, 2, 1)
    assert outcome.per_cause["forgetting"][:3] == (0.5, 1.0, 2 / 3)
    assert outcome.confidence == (1, 1, 0, 0)
    assert "false alarms: 3 clean samples unlearned: 0 got a strong cause" in "\n".join(lines)
