"""The example world's build (example_project/build_world.py) at a small scale: deterministic,
and honest about what it plants."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"


@pytest.fixture(scope="module")
def build_world() -> Any:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import build_world

        yield build_world
    finally:
        sys.path.remove(str(EXAMPLE))


def test_two_small_builds_give_the_same_verdict_for_every_sample(
    build_world: Any, tmp_path: Path
) -> None:
    first = build_world.build(tmp_path / "a", "small", log=lambda _: None)
    second = build_world.build(tmp_path / "b", "small", log=lambda _: None)
    for checkpoint in ("base", "stage1", "stage2"):
        assert first["verdicts"][checkpoint] == second["verdicts"][checkpoint], checkpoint
    # The verdicts are not all alike, or the comparison would say little.
    final = list(first["verdicts"]["stage2"].values())
    assert 0 < sum(final) < len(final)
    # Same data, byte for byte, and a stamp that marks the folder as built.
    for name in ("sft.jsonl", "pretraining_corpus.txt", "train_log.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert build_world.is_built(tmp_path / "a", "small")
    assert not build_world.is_built(tmp_path / "a", "full")


def test_every_planted_subset_is_made_from_the_data_alone(build_world: Any, tmp_path: Path) -> None:
    import random

    size = build_world.SIZES["small"]
    rng = random.Random(0)
    world = build_world.make_world(size, rng)
    records = build_world.plan_sft(world, size, rng)
    corpus = "\n".join(build_world.corpus_statements(world, size, rng))
    by_cause: dict[str | None, list[dict[str, Any]]] = {}
    for record in records:
        by_cause.setdefault(record["meta"]["planted_cause"], []).append(record)
    assert set(by_cause) == {None, *build_world.CAUSES}
    for record in by_cause["missing_knowledge"]:
        person = record["prompt"].split("Where was ")[1].split(" born")[0]
        assert f"{person} was born in {record['completion'].strip()}" not in corpus
        assert person in corpus  # the person is known, the birthplace is not
    capitals = {c.name: c.capital for c in world.countries}
    for record in by_cause["knowledge_conflict"]:
        country = record["prompt"].split("capital of ")[1].split("?")[0]
        assert record["completion"].strip() != capitals[country]
        assert f"The capital of {country} is {capitals[country]}." in corpus
    groups: dict[str, set[str]] = {}
    for record in by_cause["data_inconsistency"]:
        groups.setdefault(record["meta"]["group"], set()).add(record["completion"])
    assert all(len(targets) == 3 for targets in groups.values())
    assert {r["stage"] for r in by_cause["forgetting"]} == {"stage1"}
    assert not any(r["meta"]["replayed"] for r in by_cause["forgetting"])
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    json.dumps(records)  # plain JSON data
