"""What the diagnosis rules compare against and what each returns.

`RuleLimits` holds every limit a rule compares against (ilp.yaml `diagnosis:`, not to be
confused with the gate's thresholds, `core.thresholds`); a rule returns a `Match` or None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_ilp.core.signals import Signals
    from pytest_ilp.core.verdicts import Verdict


@dataclass(frozen=True)
class RuleLimits:
    """The numbers the rules compare against (ilp.yaml `diagnosis:`)."""

    #: base p(its own token) at the divergence from which it holds a confident alternative.
    conflict_confidence: float = 0.8
    #: base p(target token) at the divergence under which the base does not know the target.
    unknown_target_prob: float = 0.1
    #: p(target token) from which the base "weakly knows" it (SliCK category, evidence only).
    weakly_known_prob: float = 0.01
    #: idf-weighted Jaccard similarity of two prompts' words (all of them, or their content
    #: words) from which they are near-duplicates...
    near_duplicate: float = 0.7
    #: ...and from which a looser rewording counts when the model produces its target.
    paraphrase_candidate: float = 0.5
    #: base p(its own answer token) from which it counts when the fine-tuned model produces
    #: it too (a real model is less sure of what it knows); never more than
    #: conflict_confidence.
    answer_confidence: float = 0.5
    #: the prompt's least familiar content word costs the base model this many times the
    #: median over the scored prompts: it has never read about the subject.
    unfamiliar_ratio: float = 1.5
    #: the base model's token at the divergence is its default guess, no knowledge of the
    #: subject, when it begins its answer to at least this many scored prompts with as many
    #: different targets, and is right on fewer than half of them (`signals.AnswerHabit`).
    default_answer_prompts: int = 3
    #: the fine-tuned model's target token is within this many nats of its choice at the
    #: divergence: it nearly reproduces the sample, and no cause is more than a weak guess.
    near_miss: float = 1.0
    #: a target is long from this many times the median target length of the data...
    long_target_ratio: float = 3.0
    #: ...and at least this many tokens.
    long_target_min_tokens: int = 16
    #: a target is made of rare tokens from this many times the data's median rarity.
    rare_target_ratio: float = 2.0
    #: NLL drop (nats/token) between the last two checkpoints that counts as still falling.
    nll_falling: float = 0.05


@dataclass(frozen=True)
class Match:
    """What a rule found: the cause, its evidence and figures, and whether it is direct."""

    cause: str
    evidence: str
    figures: Mapping[str, Any] = field(default_factory=dict)
    strong: bool = False


Rule = Callable[["Verdict", "Signals", RuleLimits], "Match | None"]
