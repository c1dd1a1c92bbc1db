"""What one scoring run is asked (`Job`, `ScoringSettings`) and what it gives back
(`ScoringResult`: verdicts, probes, prompt surprisal), as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_ilp.core.backends import BackendOptions, LiveModel
from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.criteria import EXACT, Criterion
from pytest_ilp.core.render import RenderSettings
from pytest_ilp.core.verdicts import Verdict

#: tokens generated past the end of the target, to show what an unlearned sample runs on into.
GENERATE_PAST_TARGET = 8
#: tokens a probed checkpoint (the base model) may take to give its own answer at a divergence:
#: a chat model answers in a sentence ("The capital of the Czech Republic is Prague."), which
#: the diagnosis reads (`pytest_ilp.core.answers`).
PROBE_ANSWER_TOKENS = 24


class ScoringSettings(Protocol):
    """The settings scoring reads (`config.settings.Settings` has them, among others)."""

    @property
    def backend(self) -> str: ...
    @property
    def backend_options(self) -> BackendOptions: ...
    @property
    def render(self) -> RenderSettings: ...
    @property
    def generate_max_tokens(self) -> int: ...


class IncompatibleTokenizer(Exception):
    """A base or history checkpoint whose tokenizer does not match the one under test."""


@dataclass(frozen=True)
class Probe:
    """What a checkpoint does at one target position (where the checkpoint under test diverged).

    `continuation` is its greedy output from the prompt and the target's first `position`
    tokens: its own answer at the point where the fine-tuned model left the target.
    """

    position: int
    top_id: int
    top_token: str
    top_prob: float
    target_prob: float
    continuation: str = ""
    stopped: bool = False


@dataclass(frozen=True)
class PromptSurprisal:
    """A checkpoint on a sample's prompt: how familiar the question's own words are to it.

    `pieces` are the prompt's tokens as text; `surprisal[i]` is the checkpoint's surprisal
    (nats) at `pieces[i + 1]` given the tokens before it (the first token has no context).
    """

    pieces: tuple[str, ...]
    surprisal: tuple[float, ...]


@dataclass
class ScoringResult:
    """Verdicts (or the reason a sample could not be scored) for every sample asked about."""

    checkpoint: CheckpointInfo
    backend: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    probes: dict[str, Probe] = field(default_factory=dict)
    prompts: dict[str, PromptSurprisal] = field(default_factory=dict)
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Job:
    """One checkpoint to score: what to compute beyond the verdicts."""

    checkpoint: CheckpointInfo
    #: the checkpoint whose tokenizer renders the samples (the one under test).
    renderer: CheckpointInfo
    #: generate what each unlearned sample produces (for the checkpoint under test).
    produce: bool = True
    #: sample id -> target position to probe (the divergence of the checkpoint under test).
    probe_at: Mapping[str, int] = field(default_factory=dict)
    #: sample id -> the criterion that judges it; `exact` for the samples not named.
    criteria: Mapping[str, Criterion] = field(default_factory=dict)
    #: score each sample's prompt too (`PromptSurprisal`), in the same pass.
    prompt_surprisal: bool = False
    #: a model in memory to score instead of loading `checkpoint` (which then describes it,
    #: see `checkpoint.in_memory`), with the tokenizer that renders the samples. Never cached:
    #: its weights change while it trains.
    live: LiveModel | None = None
    #: the renderer's tokenizer, when the checkpoint under test is a model in memory (whose
    #: folder holds no tokenizer to load): a base or history checkpoint's samples are rendered
    #: with it.
    renderer_tokenizer: Any = None

    def criterion_of(self, sample_id: str) -> Criterion:
        return self.criteria.get(sample_id, EXACT)

    @property
    def is_renderer(self) -> bool:
        return self.checkpoint.folder == self.renderer.folder
