"""Evidence for diagnosis, computed once per run for the unlearned samples.

Each kind of signal exists only when its input was given:

* base (`--ilp-base`): the base model on the same token ids, probed where the fine-tuned model
  diverged: its own top token there, its confidence, the target's probability, its greedy answer.
* history (`--ilp-history`): the verdict and NLL of the sample at every earlier checkpoint.
* dataset (always): near-duplicate prompts with other targets (MinHash LSH over character
  5-grams, then exact Jaccard), and the target's length and token rarity against the dataset.
* training (`--ilp-train-log`): dataset cartography (Swayamdipta et al. 2020): the mean and the
  spread of the per-epoch probability exp(-loss), and whether the loss was still falling.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_ilp.errors import IlpDataError
from pytest_ilp.samples import Sample
from pytest_ilp.scoring import Probe
from pytest_ilp.verdicts import Verdict

#: character n-gram length of the prompt shingles for near-duplicate search.
SHINGLE = 5
#: MinHash permutations: 128 keeps the estimate of a Jaccard near 0.7 within about +-0.04.
NUM_PERM = 128


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
    #: label of the checkpoint that ended the sample's own stage, when ilp.yaml maps stages.
    own_stage: str | None = None

    @property
    def learned_earlier(self) -> CheckpointVerdict | None:
        """Where the sample was learned before being lost: its own stage's checkpoint if known,
        else the latest earlier checkpoint that reproduced it."""
        earlier = self.trajectory[:-1]
        own = [c for c in earlier if c.label == self.own_stage and c.learned]
        if own:
            return own[0]
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


@dataclass(frozen=True)
class DatasetSignals:
    siblings: tuple[Sibling, ...]
    #: a sibling whose target the model produces instead of this sample's.
    produces_sibling: str | None
    target_tokens: int
    #: share of the scored samples with a shorter target (0..1).
    length_percentile: float
    #: mean inverse document frequency, log(N / df), of the target's tokens over the targets.
    rarity: float
    rarity_percentile: float


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


# -- dataset -----------------------------------------------------------------------------------


def prompt_text(sample: Sample) -> str:
    """The prompt as one normalised string (chat turns joined), for duplicate search."""
    if sample.messages is not None:
        text = "\n".join(str(m.get("content", "")) for m in sample.messages)
    else:
        text = sample.prompt or ""
    return re.sub(r"\s+", " ", text.lower()).strip()


def _normalised_target(sample: Sample) -> str:
    return re.sub(r"\s+", " ", sample.target).strip()


def _shingles(text: str) -> set[str]:
    if len(text) <= SHINGLE:
        return {text}
    return {text[i : i + SHINGLE] for i in range(len(text) - SHINGLE + 1)}


def find_siblings(
    samples: Sequence[Sample], wanted: Iterable[str], threshold: float
) -> dict[str, list[tuple[str, float]]]:
    """For each sample id in `wanted`: the ids of near-duplicate prompts with another target.

    Identical prompts are found by hashing; similar ones through MinHash LSH, then confirmed
    with the exact Jaccard similarity of their character 5-grams, so the cost stays near linear
    in the number of samples.
    """
    from datasketch import MinHash, MinHashLSH

    wanted = set(wanted)
    texts = {s.id: prompt_text(s) for s in samples}
    targets = {s.id: _normalised_target(s) for s in samples}
    shingles = {i: _shingles(t) for i, t in texts.items()}
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    hashes = MinHash.bulk(
        ([s.encode("utf-8") for s in shingles[i]] for i in texts), num_perm=NUM_PERM, seed=1
    )
    by_id = dict(zip(texts, hashes))
    with lsh.insertion_session() as session:
        for sample_id, minhash in by_id.items():
            session.insert(sample_id, minhash, check_duplication=False)
    siblings: dict[str, list[tuple[str, float]]] = {}
    for sample_id in wanted & by_id.keys():
        found = []
        for other in lsh.query(by_id[sample_id]):
            if other == sample_id or targets[other] == targets[sample_id]:
                continue
            a, b = shingles[sample_id], shingles[other]
            similarity = len(a & b) / len(a | b)
            if similarity >= threshold:
                found.append((other, similarity))
        siblings[sample_id] = sorted(found, key=lambda pair: (-pair[1], pair[0]))
    return siblings


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
        below = sum(1 for v in sorted_values if v < value)
        return below / len(sorted_values)


def dataset_signals(
    verdict: Verdict,
    siblings: Sequence[tuple[str, float]],
    samples: Mapping[str, Sample],
    verdicts: Mapping[str, Verdict],
    stats: TargetStatistics,
) -> DatasetSignals:
    found = tuple(
        Sibling(
            id=other,
            similarity=round(similarity, 3),
            target=samples[other].target,
            learned=verdicts[other].learned if other in verdicts else None,
        )
        for other, similarity in siblings
    )
    produced_sibling = next((s.id for s in found if produces(verdict.produced, s.target)), None)
    rarity = stats.rarity(verdict)
    return DatasetSignals(
        siblings=found,
        produces_sibling=produced_sibling,
        target_tokens=verdict.target_tokens,
        length_percentile=stats.percentile(stats.lengths, verdict.target_tokens),
        rarity=rarity,
        rarity_percentile=stats.percentile(stats.rarities, rarity),
    )


# -- training log ------------------------------------------------------------------------------


def read_train_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """`{id: [(step or epoch, loss), ...]}` from a JSONL training log, sorted by step."""
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
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
