"""Why was a sample not learned? Ordered, documented rules over the signals.

The rules are tried in this order; the first that matches is the sample's `cause`, and every
rule that matches is listed in `causes`:

1. forgetting: an earlier checkpoint (`--ilp-history`) reproduced the sample; the one under
   test does not. With the data's stages mapped to checkpoints, only a sample of an earlier
   stage counts, from the end of its own stage on.
2. data_inconsistency: a near-duplicate prompt in the data has another target (a looser
   rewording counts only when the model produces its target). The evidence says whether the
   model produces that sibling's target, or the prompts are identical.
3. under_optimization: the target is long (several times the median target length of the
   data): a complex pattern.
4. knowledge_conflict: about a subject the base model (`--ilp-base`) is not unfamiliar with
   (`signals.Familiarity`), it gives the target's token little (< unknown_target_prob) and
   holds another answer: its token at the divergence is an answer (`answers.is_answer_token`),
   not its default guess for the question (`signals.AnswerHabit`), that it is confident of
   (p >= conflict_confidence), or fairly sure of (p >= answer_confidence) and the fine-tuned
   model produces it too; or, the subject measured familiar, the
   fine-tuned model still says what the base model's own answer says (`answers.echoes`), or
   the base's first token being no answer, its sentence states another (`answers.stated`).
5. under_optimization: the target is made of rare tokens (several times the median rarity of
   the data's targets), and the base model holds no confident alternative. Without a base
   model the evidence says that missing knowledge is not ruled out.
6. missing_knowledge: the base model gives the target's token little probability at the
   divergence (< unknown_target_prob) and holds no confident alternative (SliCK "unknown"): a
   confident guess about a subject it never read, its default guess for the question, or a
   token that is no answer to the question, is none; a base whose own answer names the
   target knows it.
7. under_optimization: none of the above, and the target's NLL was still falling between the
   last two checkpoints, or its training loss was still falling.
8. undiagnosed: nothing matched; the evidence says which missing input would decide it.

Each cause comes with a confidence: "strong" when the deciding evidence is direct (the model
produces a sibling's target, an earlier checkpoint reproduced the sample, the base model is
sure of another answer and the fine-tuned model follows it...), "weak" when it is a hint; a
sample the model nearly reproduces gets "weak" whatever the rule.

Every limit a rule compares against is a field of `RuleLimits` (`core.rule_limits`), set in
ilp.yaml under `diagnosis:` (not to be confused with the gate's thresholds, `core.thresholds`).
The rules that read the base model (4, 6) are in `core.knowledge_rules`, the others in
`core.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_ilp.core.causes import CAUSES, UNDIAGNOSED
from pytest_ilp.core.knowledge_rules import knowledge_conflict, missing_knowledge
from pytest_ilp.core.rule_limits import Match, Rule, RuleLimits
from pytest_ilp.core.rules import (
    data_inconsistency,
    forgetting,
    long_target,
    rare_tokens,
    still_falling,
)

if TYPE_CHECKING:
    from pytest_ilp.core.samples import Sample
    from pytest_ilp.core.signals import Signals
    from pytest_ilp.core.verdicts import Verdict


__all__ = ["RULES", "STRONG", "WEAK", "Diagnosis", "RuleLimits", "diagnose"]

STRONG = "strong"
WEAK = "weak"


@dataclass(frozen=True)
class Diagnosis:
    """The cause of one unlearned sample, why we think so, and what to do about it."""

    cause: str
    evidence: str
    suggestion: str
    #: every cause whose rule matched, the first one first.
    causes: tuple[str, ...] = ()
    #: the figures that decided it, for the JSON report.
    figures: Mapping[str, Any] = field(default_factory=dict)
    #: "strong" when the deciding evidence is direct, "weak" when it is a hint (see the rules);
    #: None for undiagnosed.
    confidence: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "confidence": self.confidence,
            "causes": list(self.causes or (self.cause,)),
            "evidence": self.evidence,
            "suggestion": self.suggestion,
            "figures": dict(self.figures),
        }


def diagnose(sample: Sample, verdict: Verdict, signals: Signals, limits: RuleLimits) -> Diagnosis:
    """Apply the rules in order (see the module docstring)."""
    matches: list[Match] = []
    for rule in RULES:
        match = rule(verdict, signals, limits)
        if match is not None and match.cause not in {m.cause for m in matches}:
            matches.append(match)
    if not matches:
        return _undiagnosed(signals)
    first = matches[0]
    figures = {k: v for m in reversed(matches) for k, v in m.figures.items()}
    strong = first.strong
    evidence = first.evidence
    if strong and _near_miss(verdict, limits):
        strong = False
        evidence += (
            f"; but the model nearly reproduces the sample (its target token is "
            f"{-verdict.margin:.2f} nats behind its choice), so this is a weak guess"
        )
    return Diagnosis(
        cause=first.cause,
        evidence=evidence,
        suggestion=CAUSES[first.cause].suggestion,
        causes=tuple(m.cause for m in matches),
        figures=figures,
        confidence=STRONG if strong else WEAK,
    )


def _near_miss(verdict: Verdict, limits: RuleLimits) -> bool:
    return -verdict.margin < limits.near_miss


def _undiagnosed(signals: Signals) -> Diagnosis:
    needs = dict(signals.missing or {})
    if needs:
        evidence = "no rule matched; " + "; ".join(needs[k] for k in sorted(needs))
    else:
        evidence = "no rule matched the signals"
    return Diagnosis(
        cause=UNDIAGNOSED,
        evidence=evidence,
        suggestion=CAUSES[UNDIAGNOSED].suggestion,
        causes=(UNDIAGNOSED,),
        figures={"needs": sorted(needs)},
    )


RULES: tuple[Rule, ...] = (
    forgetting,
    data_inconsistency,
    long_target,
    knowledge_conflict,
    rare_tokens,
    missing_knowledge,
    still_falling,
)
