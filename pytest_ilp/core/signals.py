"""Evidence for diagnosis, computed once per run for the unlearned samples: what it holds.

Each kind of signal exists only when its input was given (`core.evidence` gathers them):

* base (`--ilp-base`): the base model on the same token ids, probed where the fine-tuned model
  diverged: its own top token there, its confidence, the target's probability, its greedy answer.
* history (`--ilp-history`): the verdict and NLL of the sample at every earlier checkpoint.
* dataset (always): near-duplicate prompts with other targets (idf-weighted word similarity,
  candidates from MinHash LSH), and the target's length and token rarity against the dataset
  (`core.dataset_signals`; the prompts' words and their familiarity: `core.prompt_words`).
* training (`--ilp-train-log`): dataset cartography (Swayamdipta et al. 2020): the mean and the
  spread of the per-epoch probability exp(-loss), and whether the loss was still falling. A
  trajectory written by `ILPCallback` also gives the verdict at every point: forgetting events
  (Toneva et al. 2019), and history signals without saved checkpoints (`core.train_log`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pytest_ilp.core.scoring import Probe


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
class AnswerHabit:
    """How the base model uses one token as the first token of its answer, over every prompt
    of one question it scored: on how many it gives it, with how many different targets, and,
    among those that the fine-tuned model learned (the data's answers that training accepted;
    an unlearned sample is the one in question), on how many the target starts with it.

    Knowledge is about a subject: a model that knows where each of many people was born names
    many places. A token it gives first to many questions with many different answers, and
    that is rarely the answer, is its default guess for the question, not knowledge of the
    subject (a small model that never read where P was born names the most common birthplace).
    """

    given: int
    #: of the learned prompts it is given to (`learned`), those whose target starts with it.
    right: int
    #: different targets among the prompts it is given to.
    targets: int
    #: the prompts it is given to that the fine-tuned model learned.
    learned: int = 0

    def is_default(self, prompts: int) -> bool:
        """Given to at least `prompts` prompts with as many different targets, and right on
        at most half of the learned ones (a conflict's own target is wrong by construction,
        so the unlearned prompts do not judge it)."""
        return self.given >= prompts and self.targets >= prompts and 2 * self.right <= self.learned


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
    #: how the base model uses its token at the divergence as an answer's first token across
    #: the scored prompts (None: the divergence is past the target's first token).
    habit: AnswerHabit | None = None


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
