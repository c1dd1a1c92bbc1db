"""Evidence for diagnosis, computed once per run for the unlearned samples.

Each kind of signal exists only when its input was given:

* base (`--ilp-base`): the base model on the same token ids, probed where the fine-tuned model
  diverged: its own top token there, its confidence, the target's probability, its greedy answer.
* history (`--ilp-history`): the verdict and NLL of the sample at every earlier checkpoint.
* dataset (always): near-duplicate prompts with other targets (idf-weighted word similarity,
  candidates from MinHash LSH), and the target's length and token rarity against the dataset.
* training (`--ilp-train-log`): dataset cartography (Swayamdipta et al. 2020): the mean and the
  spread of the per-epoch probability exp(-loss), and whether the loss was still falling. A
  trajectory written by `ILPCallback` also gives the verdict at every point: forgetting events
  (Toneva et al. 2019), and history signals without saved checkpoints (`trajectory_history`).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import statistics
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_ilp.core.answers import FUNCTION_WORDS
from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring import Probe
from pytest_ilp.core.verdicts import Verdict

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
    #: the base model's token at the divergence is an answer the data's targets give there
    #: (`TargetStatistics.is_answer_token`), not template or punctuation.
    answers: bool = True


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
    #: the sample's target text.
    target: str = ""
    #: the words of the sample's prompt, lower-cased and sorted (what a base model's answer
    #: sentence repeats of the question).
    prompt_words: tuple[str, ...] = ()


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
    #: points at which the sample was learned (a trajectory written by ILPCallback), else None.
    learned_points: int | None = None
    #: forgetting events (Toneva et al. 2019): learned at one point, unlearned at the next.
    forgetting_events: int | None = None


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


# -- training log ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogPoint:
    """One sample at one point of training, read from `--ilp-train-log`.

    A plain training log gives the loss alone; a trajectory written by
    `pytest_ilp.integrations.transformers.ILPCallback` also gives the verdict and margin the
    model had at that point (its `nll` stands for the loss).
    """

    #: how the point is named in evidence: "step 120", "stage1 epoch 3".
    label: str
    #: the step, or the epoch when the record gives no step.
    when: float
    #: mean nats per target token.
    loss: float
    learned: bool | None = None
    margin: float | None = None
    stage: str | None = None


TrainLog = dict[str, list[LogPoint]]


def read_train_log(path: Path) -> TrainLog:
    """`{id: [LogPoint, ...]}` from a JSONL training log, in training order.

    Records are `{id, step or epoch, loss}` (a per-sample loss log), or the callback's
    trajectory `{id, point, step, epoch, stage, learned, nll, margin}`. Points are ordered by
    `point` where records give it (steps restart when a second stage trains on), else by step
    or epoch.
    """
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise IlpDataError(f"{path}: cannot read the training log ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise IlpDataError(f"{path}: the training log is not UTF-8 text") from None
    return parse_train_log(lines, str(path))


def parse_train_log(lines: Iterable[str], where: str) -> TrainLog:
    """`read_train_log` on lines of JSON; errors name `where` and the line number."""
    rows: dict[str, list[tuple[tuple[float, float], LogPoint]]] = defaultdict(list)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sample_id, order, point = _log_point(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise IlpDataError(
                f"{where}:{number}: expected a JSON record {{id, step or epoch, loss}} or a "
                "trajectory record {id, step, nll, learned, margin} (written by ILPCallback)"
            ) from None
        rows[sample_id].append((order, point))
    return {k: _unique_labels([p for _, p in sorted(v, key=_order)]) for k, v in rows.items()}


def _order(row: tuple[tuple[float, float], LogPoint]) -> tuple[float, float]:
    return row[0]


def _log_point(record: dict[str, Any]) -> tuple[str, tuple[float, float], LogPoint]:
    sample_id = str(record["id"])
    unit = "step" if record.get("step") is not None else "epoch"
    when = record.get(unit)
    if when is None or isinstance(when, bool) or not isinstance(when, (int, float)):
        raise KeyError(unit)
    loss = record.get("loss", record.get("nll"))
    if isinstance(loss, bool) or not isinstance(loss, (int, float)):
        raise TypeError("loss")
    learned = record.get("learned")
    if learned is not None and not isinstance(learned, bool):
        raise TypeError("learned")
    margin = record.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        raise TypeError("margin")
    stage = record.get("stage")
    if stage is not None and not isinstance(stage, str):
        raise TypeError("stage")
    index = record.get("point")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise TypeError("point")
    label = f"{stage} {unit} {float(when):g}" if stage else f"{unit} {float(when):g}"
    order = (float(index), float(when)) if index is not None else (float(when), 0.0)
    point = LogPoint(
        label=label,
        when=float(when),
        loss=float(loss),
        learned=learned,
        margin=None if margin is None else float(margin),
        stage=stage,
    )
    return sample_id, order, point


def _unique_labels(points: list[LogPoint]) -> list[LogPoint]:
    """Number the repeats of a label ("step 40 (2)"): evidence names points by label."""
    seen: Counter[str] = Counter()
    unique = []
    for point in points:
        seen[point.label] += 1
        if seen[point.label] > 1:
            point = replace(point, label=f"{point.label} ({seen[point.label]})")
        unique.append(point)
    return unique


def training_signals(points: Sequence[LogPoint]) -> TrainingSignals:
    probabilities = [math.exp(-p.loss) for p in points]
    verdicts = [p.learned for p in points if p.learned is not None]
    return TrainingSignals(
        points=len(points),
        confidence=statistics.fmean(probabilities),
        variability=statistics.pstdev(probabilities) if len(probabilities) > 1 else 0.0,
        loss_trend=points[-1].loss - points[-2].loss if len(points) > 1 else None,
        learned_points=sum(verdicts) if verdicts else None,
        forgetting_events=(
            sum(1 for a, b in itertools.pairwise(verdicts) if a and not b) if verdicts else None
        ),
    )


def trajectory_history(
    points: Sequence[LogPoint], final: CheckpointVerdict, stage: str | None
) -> HistorySignals | None:
    """History signals from a trajectory's verdicts instead of saved checkpoints.

    The points (those with a verdict) come before the checkpoint under test, `final`. When the
    points carry stage names, they map stages as ilp.yaml's `history` does: the last point of
    a stage ends it, and the last point's stage is the final one, whose samples cannot have
    been forgotten; `stage` is the sample's own. None when no point has a verdict.
    """
    judged = [p for p in points if p.learned is not None]
    if not judged:
        return None
    trajectory = tuple(
        CheckpointVerdict(
            p.label, bool(p.learned), p.loss, p.margin if p.margin is not None else math.nan
        )
        for p in judged
    )
    mapped = any(p.stage is not None for p in judged)
    own = None
    if mapped and stage is not None and stage != judged[-1].stage:
        own = next((p.label for p in reversed(judged) if p.stage == stage), None)
    return HistorySignals((*trajectory, final), own_stage=own, stages_mapped=mapped)
