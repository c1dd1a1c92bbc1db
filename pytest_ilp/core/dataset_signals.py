"""The data's own evidence about an unlearned sample (always computed): near-duplicate prompts
with other targets (idf-weighted word similarity, candidates from MinHash LSH), and the
target's length and token rarity against the data's.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pytest_ilp.core.prompt_words import content_words, prompt_word_sequence, prompt_words
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.signals import DatasetSignals, Sibling
from pytest_ilp.core.verdicts import Verdict

#: MinHash permutations: 128 keeps the estimate of a Jaccard near 0.7 within about +-0.04.
NUM_PERM = 128
#: copies of a word per nat of idf in the MinHash sets (finer weights, larger sets).
IDF_REPEATS = 2
#: how far under the near-duplicate threshold the LSH still proposes candidates.
LSH_SLACK = 0.15


def _normalised_target(sample: Sample) -> str:
    return re.sub(r"\s+", " ", sample.target).strip()


def weighted_jaccard(a: frozenset[str], b: frozenset[str], idf: Mapping[str, float]) -> float:
    """Sum of the idf of the shared words over the sum of the idf of all their words."""
    if a == b:
        return 1.0
    union = sum(idf[w] for w in a | b)
    return sum(idf[w] for w in a & b) / union if union > 0 else 0.0


def find_siblings(
    samples: Sequence[Sample], wanted: Iterable[str], threshold: float, content: bool = True
) -> dict[str, list[tuple[str, float]]]:
    """For each sample id in `wanted`: the ids of near-duplicate candidates with another
    target, with their similarity (candidates from `threshold` on; see `dataset_signals` for
    which of them count).

    Similarity is the Jaccard similarity of the prompts' word sets, each word weighted by its
    inverse document frequency over the prompts, log(N / df). Words every prompt of a template
    shares weigh little and the words that make a question its own (a name, a number) weigh
    much, so "In which year was Kemok born?" and "In what year was Kemok born?" are near
    duplicates while "In which year was Tralok born?" is not. Equal word sets score 1.

    A question asked in other words ("What is the guild of Kemok?", "Tell me the guild of
    Kemok.") brings rare framing words that the idf weights as much as the name; so the
    similarity is the larger of that over all words and that over the content words (function
    words aside, see `FUNCTION_WORDS`); `content=False` compares all words only.

    Candidates come from MinHash LSH (datasketch) over the word sets with each word repeated in
    proportion to its idf, so the cost stays near linear in the number of samples; each
    candidate is then confirmed with the exact weighted similarity.
    """
    from datasketch import MinHash, MinHashLSH

    wanted = set(wanted)
    words = {s.id: prompt_words(s) for s in samples}
    content_view = {i: content_words(ws) for i, ws in words.items()}
    targets = {s.id: _normalised_target(s) for s in samples}
    frequency: Counter[str] = Counter(w for ws in words.values() for w in ws)
    idf = {w: math.log(len(words) / df) for w, df in frequency.items()}

    def weighted_elements(ws: frozenset[str]) -> list[bytes]:
        # Repeating a word k times gives it weight k in the Jaccard of the repeated sets.
        return [
            f"{w}\x00{k}".encode() for w in ws for k in range(max(1, round(idf[w] * IDF_REPEATS)))
        ]

    def similarity(a: str, b: str) -> float:
        score = weighted_jaccard(words[a], words[b], idf)
        if content:
            score = max(score, weighted_jaccard(content_view[a], content_view[b], idf))
        return score

    found: dict[str, dict[str, float]] = {i: {} for i in wanted & words.keys()}
    # One LSH per view of the prompts; each only proposes candidates, and a lower threshold
    # keeps those whose estimate falls a little short (rounded weights, MinHash error).
    for view in (words, content_view) if content else (words,):
        lsh = MinHashLSH(threshold=max(0.05, threshold - LSH_SLACK), num_perm=NUM_PERM)
        hashes = MinHash.bulk(
            (weighted_elements(view[i]) for i in view), num_perm=NUM_PERM, seed=1, hashfunc=_crc32
        )
        by_id = dict(zip(view, hashes))
        with lsh.insertion_session() as session:
            for sample_id, minhash in by_id.items():
                session.insert(sample_id, minhash, check_duplication=False)
        for sample_id, own in found.items():
            for other in lsh.query(by_id[sample_id]):
                if other == sample_id or other in own or targets[other] == targets[sample_id]:
                    continue
                score = similarity(sample_id, other)
                if score >= threshold:
                    own[other] = score
    return {
        i: sorted(own.items(), key=lambda pair: (-pair[1], pair[0])) for i, own in found.items()
    }


def _crc32(data: bytes) -> int:
    """A fast, stable 32-bit hash (datasketch's default, SHA-1, costs several times more)."""
    return zlib.crc32(data)


def produces(produced: str | None, target: str) -> bool:
    """Whether the model's output is (or starts with) a given target, whitespace aside."""
    if not produced:
        return False
    said = re.sub(r"\s+", " ", produced).strip()
    other = re.sub(r"\s+", " ", target).strip()
    return bool(other) and said.startswith(other)


@dataclass(frozen=True)
class TargetStatistics:
    """Token document frequencies and target lengths over the scored samples."""

    documents: int
    frequency: Mapping[int, int]
    lengths: Sequence[int]
    rarities: Sequence[float]
    #: the tokens that begin a target.
    first_tokens: frozenset[int] = frozenset()

    @classmethod
    def of(cls, verdicts: Iterable[Verdict]) -> TargetStatistics:
        verdicts = list(verdicts)
        frequency: Counter[int] = Counter()
        for verdict in verdicts:
            frequency.update(set(verdict.target_ids))
        stats = cls(len(verdicts), frequency, sorted(v.target_tokens for v in verdicts), [])
        rarities = sorted(stats.rarity(v) for v in verdicts)
        first = frozenset(v.target_ids[0] for v in verdicts if v.target_ids)
        return cls(stats.documents, frequency, stats.lengths, rarities, first)

    def is_answer_token(self, token_id: int, position: int) -> bool:
        """Whether a token is something the data's targets say there: one that begins a
        target, or, past a target's first token, one that occurs in a target. A base model's
        preferred template word (" The", "?", a newline) where an answer starts is not."""
        if position == 0:
            return token_id in self.first_tokens
        return token_id in self.frequency

    def rarity(self, verdict: Verdict) -> float:
        ids = verdict.target_ids
        return sum(math.log(self.documents / self.frequency.get(t, 1)) for t in ids) / len(ids)

    @staticmethod
    def percentile(sorted_values: Sequence[float], value: float) -> float:
        """Share of the values strictly below `value`."""
        if not sorted_values:
            return 0.0
        return bisect.bisect_left(sorted_values, value) / len(sorted_values)

    @property
    def median_length(self) -> float:
        return statistics.median(self.lengths) if self.lengths else 0.0

    @property
    def median_rarity(self) -> float:
        return statistics.median(self.rarities) if self.rarities else 0.0


def dataset_signals(
    verdict: Verdict,
    siblings: Sequence[tuple[str, float]],
    samples: Mapping[str, Sample],
    verdicts: Mapping[str, Verdict],
    stats: TargetStatistics,
    near_duplicate: float = 0.0,
) -> DatasetSignals:
    """The data's evidence about one unlearned sample. A sibling candidate less similar than
    `near_duplicate` (a looser rewording) counts only when the model produces its target."""
    own = prompt_word_sequence(samples[verdict.sample_id])
    found = tuple(
        Sibling(
            id=other,
            similarity=round(similarity, 3),
            target=samples[other].target,
            learned=verdicts[other].learned if other in verdicts else None,
            identical=prompt_word_sequence(samples[other]) == own,
        )
        for other, similarity in siblings
        if similarity >= near_duplicate or produces(verdict.produced, samples[other].target)
    )
    produced_sibling = next((s.id for s in found if produces(verdict.produced, s.target)), None)
    rarity = stats.rarity(verdict)
    return DatasetSignals(
        siblings=found,
        produces_sibling=produced_sibling,
        target_tokens=verdict.target_tokens,
        length_percentile=stats.percentile(stats.lengths, verdict.target_tokens),
        median_target_tokens=stats.median_length,
        rarity=rarity,
        rarity_percentile=stats.percentile(stats.rarities, rarity),
        median_rarity=stats.median_rarity,
        target=samples[verdict.sample_id].target,
        prompt_words=tuple(sorted(prompt_words(samples[verdict.sample_id]))),
    )
