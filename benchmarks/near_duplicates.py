"""Do near-duplicate prompts survive rewording? Recall on paraphrased pairs, and the cost.

    python benchmarks/near_duplicates.py                # 10,000 prompts
    python benchmarks/near_duplicates.py --samples 2000

Makes a dataset like an SFT set of facts: invented entities, each asked about several
relations, each question in one of several wordings (none of them the worlds' wordings).
Into it go planted pairs: the same question about the same entity in two wordings ("What is
the guild of Kemok?" / "Tell me the guild of Kemok."), with different targets. Then runs
`pytest_ilp.core.dataset_signals.find_siblings` and reports:

* recall: the share of planted pairs found, at the near-duplicate threshold (a sibling on
  its own) and at the paraphrase-candidate threshold (a sibling when the model produces its
  target), for the default similarity (all words, or content words) and for all words alone
  (the similarity before content words were added);
* false pairs: pairs found between different questions (another relation of the same entity,
  or the same relation of another entity), per 1,000 prompts;
* seconds per 10,000 prompts, and the ratio to all words alone, measured in this run.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from pytest_ilp.core.dataset_signals import find_siblings
from pytest_ilp.core.diagnosis import RuleLimits
from pytest_ilp.core.samples import Sample

WORDINGS = (
    "What is the {r} of {e}?",
    "Tell me the {r} of {e}.",
    "Which {r} does {e} have?",
    "Please give the {r} of {e}.",
    "Do you know the {r} of {e}?",
    "I would like to know the {r} of {e}.",
)
RELATIONS = ("guild", "hometown", "employer", "nickname", "mentor", "rival", "motto", "patron")
SYLLABLES = ("ka", "lo", "mi", "ra", "tu", "ve", "zo", "ne", "shi", "po", "gar", "del", "fin")


def entity(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()


def dataset(samples: int, seed: int = 0) -> tuple[list[Sample], set[frozenset[str]]]:
    """Prompts about entities, and the planted paraphrase pairs (one in ten prompts)."""
    rng = random.Random(seed)
    records: list[Sample] = []
    planted: set[frozenset[str]] = set()
    names: set[str] = set()
    while len(records) < samples:
        name = entity(rng)
        if name in names:
            continue
        names.add(name)
        for relation in rng.sample(RELATIONS, 3):
            first, second = rng.sample(WORDINGS, 2)
            number = len(records)
            records.append(_sample(f"s{number}", first.format(r=relation, e=name), rng))
            if rng.random() < 0.1:
                records.append(_sample(f"s{number}p", second.format(r=relation, e=name), rng))
                planted.add(frozenset({f"s{number}", f"s{number}p"}))
    return records, planted


def _sample(sample_id: str, prompt: str, rng: random.Random) -> Sample:
    target = f" {entity(rng)}"
    return Sample(sample_id, Path("synthetic.jsonl"), 1, "prompt_completion", target, prompt=prompt)


def measure(
    samples: list[Sample], planted: set[frozenset[str]], threshold: float, content: bool
) -> tuple[float, int, float]:
    """Recall of the planted pairs, pairs found that are not planted, and seconds."""
    wanted = [s.id for s in samples]
    started = time.perf_counter()
    siblings = find_siblings(samples, wanted, threshold, content=content)
    seconds = time.perf_counter() - started
    found = {frozenset({a, b}) for a, pairs in siblings.items() for b, _ in pairs}
    recall = len(found & planted) / len(planted)
    false = len(found - planted)
    return recall, false, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args(argv)
    samples, planted = dataset(args.samples)
    limits = RuleLimits()
    print(f"{len(samples)} prompts, {len(planted)} planted paraphrase pairs")
    for threshold, label in (
        (limits.near_duplicate, "near-duplicate threshold (a sibling on its own)"),
        (limits.paraphrase_candidate, "paraphrase-candidate threshold (+ the model's output)"),
    ):
        print(f"{label}, {threshold}:")
        timings = {}
        for content, name in ((True, "all or content words"), (False, "all words alone")):
            recall, false, seconds = measure(samples, planted, threshold, content)
            timings[content] = seconds
            print(
                f"  {name:<22} recall {recall:4.0%}, {false} false pairs "
                f"({false * 1000 / len(samples):.1f} per 1,000 prompts), "
                f"{seconds * 10_000 / len(samples):.1f} s per 10,000 prompts"
            )
        print(f"  cost ratio, content words added: {timings[True] / timings[False]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
