"""Evidence for diagnosis, computed once per run for the unlearned samples.

Each kind of signal exists only when its input was given:

* base (`--ilp-base`): the base model on the same token ids, probed where the fine-tuned model
  diverged: its own top token there, its confidence, the target's probability, its greedy answer.
* history (`--ilp-history`): the verdict and NLL of the sample at every earlier checkpoint.
* dataset (always): near-duplicate prompts with other targets (idf-weighted word similarity,
  candidates from MinHash LSH), and the target's length and token rarity against the dataset.
* training (`--ilp-train-log`): dataset cartography (Swayamdipta et al. 2020): the mean and the
  spread of the per-epoch probability exp(-loss), and whether the loss was still falling.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import statistics
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_ilp.errors import IlpDataError
from pytest_ilp.samples import Sample
from pytest_ilp.scoring import Probe
from pytest_ilp.verdicts import Verdict

#: MinHash permutations: 128 keeps the estimate of a Jaccard near 0.7 within about +-0.04.
NUM_PERM = 128
#: copies of a word per nat of idf in the MinHash sets (finer weights, larger sets).
IDF_REPEATS = 2
#: how far under the near-duplicate threshold the LSH still proposes candidates.
LSH_SLACK = 0.15


@dataclass(frozen=True)
class Familiarity:
    """The base model's surprisal at the prompt's least familiar content word.

    An entity the base model never read costs it many nats on every one of its tokens; a
    famous one costs a few on its first token and little after. Content words are the words
    that few prompts of the data share (template words are shared by many).
    """

    word: str
    #: nats, summed over the word's tokens.
    surprisal: float
    #: the median of the same figure over the prompts the base model scored.
    median: float

    @property
    def ratio(self) -> float:
        return self.surprisal / self.median if self.median > 0 else 1.0


@dataclass(frozen=True)
class BaseSignals:
    """The base model on the sample, and at the fine-tuned model's first divergence."""

    checkpoint: str
    #: the base model already reproduces the sample.
    learned: bool
    nll: float
    probe: Probe
    #: SliCK-style category (Gekhman et al. 2024), estimated from the probe, see `knowledge`.
    knowledge: str
    #: how surprised the base model is by the prompt's least familiar content word, against
    #: the other scored prompts (None: the probe carries no prompt figures).
    familiarity: Familiarity | None = None


@dataclass(frozen=True)
class CheckpointVerdict:
    label: str
    learned: bool
    nll: float
    margin: float


@dataclass(frozen=True)
class HistorySignals:
    """The sample along sequential fine-tuning: earlier checkpoints, then the one under test."""

    trajectory: tuple[CheckpointVerdict, ...]
    #: label of the earlier checkpoint that ended the sample's own stage, when ilp.yaml maps
    #: the data's stage names to checkpoints and the sample's stage is one of them.
    own_stage: str | None = None
    #: ilp.yaml maps stage names to checkpoints, so a sample whose stage is not among the
    #: earlier ones was trained in the final stage and cannot have been forgotten.
    stages_mapped: bool = False

    @property
    def learned_earlier(self) -> CheckpointVerdict | None:
        """Where the sample was learned before being lost, or None.

        With stages mapped: the first checkpoint from the end of the sample's own stage on that
        reproduced it (a sample of the final stage has none). Without: the latest earlier
        checkpoint that reproduced it.
        """
        earlier = self.trajectory[:-1]
        if self.stages_mapped:
            labels = [c.label for c in earlier]
            if self.own_stage not in labels:
                return None
            since_own = earlier[labels.index(self.own_stage) :]
            return next((c for c in since_own if c.learned), None)
        learned = [c for c in earlier if c.learned]
        return learned[-1] if learned else None

    @property
    def nll_trend(self) -> float | None:
        """NLL change from the previous checkpoint to the one under test (negative: falling)."""
        if len(self.trajectory) < 2:
            return None
        return self.trajectory[-1].nll - self.trajectory[-2].nll


@dataclass(frozen=True)
class Sibling:
    """A sample whose prompt nearly duplicates this one's, with another target."""

    id: str
    similarity: float
    target: str
    learned: bool | None
    #: the same words in the same order as this sample's prompt (similarity 1 only says the
    #: same set of words).
    identical: bool = False


@dataclass(frozen=True)
class DatasetSignals:
    siblings: tuple[Sibling, ...]
    #: a sibling whose target the model produces instead of this sample's.
    produces_sibling: str | None
    target_tokens: int
    #: share of the scored samples with a shorter target (0..1).
    length_percentile: float
    median_target_tokens: float
    #: mean inverse document frequency, log(N / df), of the target's tokens over the targets.
    rarity: float
    rarity_percentile: float
    median_rarity: float


@dataclass(frozen=True)
class TrainingSignals:
    """Dataset cartography from a per-sample training-loss log."""

    points: int
    #: mean of exp(-loss) across the logged steps or epochs.
    confidence: float
    #: standard deviation of exp(-loss) across them.
    variability: float
    #: last logged loss minus the one before (negative: still falling).
    loss_trend: float | None


@dataclass(frozen=True)
class Signals:
    """All the evidence about one unlearned sample; a part is None when its input is missing."""

    dataset: DatasetSignals
    base: BaseSignals | None = None
    history: HistorySignals | None = None
    training: TrainingSignals | None = None
    #: why a part is missing, e.g. {"base": "needs --ilp-base"}.
    missing: Mapping[str, str] | None = None


def knowledge(learned: bool, probe: Probe, weak: float) -> str:
    """SliCK categories from teacher-forced figures instead of sampling few-shot answers.

    highly_known: the base model's greedy decoding already reproduces the target;
    maybe_known: its greedy choice at the decisive position is the target's token;
    weakly_known: it gives the target's token at least `weak` probability there (sampling
    would sometimes produce it); unknown: less than that.
    """
    if learned:
        return "highly_known"
    if probe.target_prob >= probe.top_prob:  # the target's token is the greedy choice
        return "maybe_known"
    return "weakly_known" if probe.target_prob >= weak else "unknown"


#: a word in more than this share of the prompts is template, not content (familiarity).
TEMPLATE_SHARE = 0.1


def word_surprisal(pieces: Sequence[str], surprisal: Sequence[float]) -> list[tuple[str, float]]:
    """The prompt's words (lower-cased) with the surprisal of the tokens that spell them.

    `surprisal[i]` is that of `pieces[i + 1]`; a word that touches the first token, which has
    no surprisal, is left out.
    """
    text, spans = "", []
    for piece in pieces:
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    words = []
    for match in re.finditer(r"\w+", text):
        start, end = match.span()
        tokens = [i for i, (a, b) in enumerate(spans) if a < end and b > start]
        if not tokens or tokens[0] == 0:
            continue
        words.append((match.group().lower(), sum(surprisal[i - 1] for i in tokens)))
    return words


def least_familiar_word(
    pieces: Sequence[str], surprisal: Sequence[float], prompt_df: Mapping[str, int], prompts: int
) -> tuple[str, float] | None:
    """The content word of the prompt that surprises the model most, with its surprisal."""
    limit = max(2.0, TEMPLATE_SHARE * prompts)
    content = [
        (word, nats)
        for word, nats in word_surprisal(pieces, surprisal)
        if 0 < prompt_df.get(word, 0) <= limit
    ]
    return max(content, key=lambda pair: pair[1]) if content else None


def prompt_document_frequency(samples: Iterable[Sample]) -> Counter[str]:
    """In how many prompts each word occurs."""
    return Counter(w for s in samples for w in prompt_words(s))


# -- dataset -----------------------------------------------------------------------------------


def prompt_word_sequence(sample: Sample) -> tuple[str, ...]:
    """The prompt's words in order, lower-cased, punctuation and spacing aside (chat turns
    joined): two prompts with the same sequence are the same question."""
    if sample.messages is not None:
        text = "\n".join(str(m.get("content", "")) for m in sample.messages)
    else:
        text = sample.prompt or ""
    return tuple(re.findall(r"\w+", text.lower()))


def prompt_words(sample: Sample) -> frozenset[str]:
    """The prompt's words as a set (what near-duplicate similarity compares)."""
    return frozenset(prompt_word_sequence(sample))


def _normalised_target(sample: Sample) -> str:
    return re.sub(r"\s+", " ", sample.target).strip()


def weighted_jaccard(a: frozenset[str], b: frozenset[str], idf: Mapping[str, float]) -> float:
    """Sum of the idf of the shared words over the sum of the idf of all their words."""
    if a == b:
        return 1.0
    union = sum(idf[w] for w in a | b)
    return sum(idf[w] for w in a & b) / union if union > 0 else 0.0


#: words that frame a request rather than say what it is about: articles, auxiliaries,
#: pronouns, prepositions and the polite or imperative openings of a question ("tell me",
#: "please give"). Question words (what, where, which, who...) are NOT here: they tell a
#: question about a year from one about a place.
_FUNCTION_WORDS = """
a an the is are was were be been being am do does did has have had will would shall
should can could may might must of in on at to for from by with about into onto as and or
but if then so than that this these those it its i me my we us our you your he him his she
her they them their please tell give say show let kindly just also now there here
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())


def content_words(words: frozenset[str]) -> frozenset[str]:
    """The words of a prompt that say what it asks, function words aside."""
    return frozenset(w for w in words if w not in FUNCTION_WORDS) or words


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

    @classmethod
    def of(cls, verdicts: Iterable[Verdict]) -> TargetStatistics:
        verdicts = list(verdicts)
        frequency: Counter[int] = Counter()
        for verdict in verdicts:
            frequency.update(set(verdict.target_ids))
        stats = cls(len(verdicts), frequency, sorted(v.target_tokens for v in verdicts), [])
        rarities = sorted(stats.rarity(v) for v in verdicts)
        return cls(stats.documents, frequency, stats.lengths, rarities)

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
    )


# -- training log ------------------------------------------------------------------------------


def read_train_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """`{id: [(step or epoch, loss), ...]}` from a JSONL training log, sorted by step."""
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise IlpDataError(f"{path}: cannot read the training log ({exc.strerror})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            when = record.get("step", record.get("epoch"))
            loss = float(record["loss"])
            sample_id = str(record["id"])
            if when is None or isinstance(when, bool):
                raise KeyError("step")
            points[sample_id].append((float(when), loss))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise IlpDataError(
                f"{path}:{number}: expected a JSON record {{id, step or epoch, loss}}"
            ) from None
    return {k: sorted(v) for k, v in points.items()}


def training_signals(points: Sequence[tuple[float, float]]) -> TrainingSignals:
    probabilities = [math.exp(-loss) for _, loss in points]
    return TrainingSignals(
        points=len(points),
        confidence=statistics.fmean(probabilities),
        variability=statistics.pstdev(probabilities) if len(probabilities) > 1 else 0.0,
        loss_trend=points[-1][1] - points[-2][1] if len(points) > 1 else None,
    )
