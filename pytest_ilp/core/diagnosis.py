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
4. knowledge_conflict: at the divergence the base model (`--ilp-base`) prefers another token
   than the target's, one that can start an answer, about a subject it is familiar with; it is
   confident (p >= conflict_confidence), or fairly sure (p >= answer_confidence) and the
   fine-tuned model produces that token too.
5. under_optimization: the target is made of rare tokens (several times the median rarity of
   the data's targets), and the base model holds no confident alternative. Without a base
   model the evidence says that missing knowledge is not ruled out.
6. missing_knowledge: the base model gives the target's token little probability at the
   divergence (< unknown_target_prob) and holds no confident alternative (SliCK "unknown"): a
   confident guess about a subject it never read (see `signals.Familiarity`) is none.
7. under_optimization: none of the above, and the target's NLL was still falling between the
   last two checkpoints, or its training loss was still falling.
8. undiagnosed: nothing matched; the evidence says which missing input would decide it.

Each cause comes with a confidence: "strong" when the deciding evidence is direct (the model
produces a sibling's target, an earlier checkpoint reproduced the sample, the base model is
sure of another answer and the fine-tuned model follows it...), "weak" when it is a hint; a
sample the model nearly reproduces gets "weak" whatever the rule.

Every limit a rule compares against is a field of `RuleLimits`, set in ilp.yaml under
`diagnosis:` (not to be confused with the gate's thresholds, `core.thresholds`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_ilp.core import answers
from pytest_ilp.core.causes import (
    CAUSES,
    DATA_INCONSISTENCY,
    FORGETTING,
    KNOWLEDGE_CONFLICT,
    MISSING_KNOWLEDGE,
    UNDER_OPTIMIZATION,
    UNDIAGNOSED,
)

if TYPE_CHECKING:
    from pytest_ilp.core.samples import Sample
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
    #: base p(its own token) from which that token is the base model's answer when the
    #: fine-tuned model produces it too, or its answer sentence (a real model is less sure
    #: of what it knows); never more than conflict_confidence.
    answer_confidence: float = 0.5
    #: the prompt's least familiar content word costs the base model this many times the
    #: median over the scored prompts: it has never read about the subject.
    unfamiliar_ratio: float = 1.5
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


@dataclass(frozen=True)
class Match:
    cause: str
    evidence: str
    figures: Mapping[str, Any] = field(default_factory=dict)
    strong: bool = False


Rule = Callable[["Verdict", "Signals", RuleLimits], "Match | None"]


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


# -- the rules, in order -----------------------------------------------------------------------


def forgetting(verdict: Verdict, signals: Signals, limits: RuleLimits) -> Match | None:
    history = signals.history
    if history is None:
        return None
    learned = history.learned_earlier
    if learned is None:
        return None
    final = history.trajectory[-1]
    return Match(
        FORGETTING,
        f"learned at {learned.label} (margin {learned.margin:+.2f} nats) but not at the final "
        f"checkpoint; NLL {learned.nll:.3f} -> {final.nll:.3f} nats/token",
        {"learned_at": learned.label, "nll_then": learned.nll, "nll_now": final.nll},
        strong=True,
    )


def data_inconsistency(verdict: Verdict, signals: Signals, limits: RuleLimits) -> Match | None:
    dataset = signals.dataset
    if not dataset.siblings:
        return None
    produced = dataset.produces_sibling
    sibling = (
        next(s for s in dataset.siblings if s.id == produced) if produced else dataset.siblings[0]
    )
    if produced:
        how = f"and the model produces {sibling.id}'s target {sibling.target!r}"
    elif sibling.identical:
        how = f"with the identical prompt and the target {sibling.target!r}"
    else:
        how = f"with the target {sibling.target!r}"
    return Match(
        DATA_INCONSISTENCY,
        f"{len(dataset.siblings)} near-duplicate prompt(s) with another target, e.g. "
        f"{sibling.id} (similarity {sibling.similarity:.2f}), {how}",
        {
            "siblings": [s.id for s in dataset.siblings],
            "produces_sibling": produced,
            "similarity": sibling.similarity,
        },
        strong=bool(produced) or sibling.identical,
    )


def _unfamiliar(signals: Signals, limits: RuleLimits) -> bool:
    """The base model finds the prompt's subject far more surprising than the data's usual:
    it never read about it, so a confident answer of its own is a guess, not knowledge."""
    familiarity = signals.base.familiarity if signals.base is not None else None
    return familiarity is not None and familiarity.ratio >= limits.unfamiliar_ratio


def _familiar(signals: Signals) -> bool:
    """How familiar the subject is was measured (`_unfamiliar` says whether it is not)."""
    return signals.base is not None and signals.base.familiarity is not None


def _is_answer(verdict: Verdict, signals: Signals) -> bool:
    """The base model's token at the divergence can be an answer there: a word spelt like the
    target's token (a number for a number, a name for a name), and one the data's targets give
    there or no function word; not '?', a newline, an end token, " The" starting a sentence,
    or a year where the question asks for a place (see `answers.is_answer_token`)."""
    base, divergence = signals.base, verdict.first_divergence
    if base is None or divergence is None:
        return False
    probe = base.probe
    if probe.stopped and not probe.continuation:
        return False  # its token is the end of the reply
    return answers.is_answer_token(probe.top_token, divergence.expected, base.answers)


def _base_answer(verdict: Verdict, signals: Signals) -> str:
    """The base model's own answer: the target's tokens it was given up to the divergence and
    its greedy continuation from there, to the end of the line."""
    assert signals.base is not None
    divergence = verdict.first_divergence
    position = divergence.position if divergence is not None else 0
    prefix = "".join(verdict.target_pieces[:position])
    return answers.base_answer(prefix, signals.base.probe.continuation)


def _familiarity_text(signals: Signals) -> str:
    familiarity = signals.base.familiarity if signals.base is not None else None
    if familiarity is None:
        return ""
    return (
        f"; the prompt's least familiar word {familiarity.word!r} costs the base model "
        f"{familiarity.surprisal:.1f} nats ({familiarity.ratio:.1f}x the data's median)"
    )


def _familiarity_figures(signals: Signals) -> dict[str, Any]:
    familiarity = signals.base.familiarity if signals.base is not None else None
    if familiarity is None:
        return {}
    return {"familiarity_ratio": round(familiarity.ratio, 3), "unfamiliar_word": familiarity.word}


def knowledge_conflict(verdict: Verdict, signals: Signals, limits: RuleLimits) -> Match | None:
    base, divergence = signals.base, verdict.first_divergence
    if base is None or divergence is None or _unfamiliar(signals, limits):
        return None
    probe = base.probe
    # A base model that gives the target fair odds does not contradict it (SliCK: it weakly
    # knows it); whatever it prefers, the sample is no conflict.
    if probe.target_prob >= limits.unknown_target_prob:
        return None
    token_answer = _is_answer(verdict, signals)
    answer = token_answer and probe.top_id != divergence.expected_id
    follows = probe.top_id == divergence.predicted_id
    # The base holds another answer about a subject it knows. Where its token at the
    # divergence is an answer, that token's probability is the evidence: confident, or less
    # sure but the fine-tuned model produces that same answer (never a higher bar than
    # `conflict_confidence`).
    fairly_sure = probe.top_prob >= min(limits.answer_confidence, limits.conflict_confidence)
    confident = answer and probe.top_prob >= limits.conflict_confidence
    followed = answer and follows and fairly_sure
    # A small chat model is unsure of any first token, though: it puts 0.1-0.2 on " The"
    # (then "capital of France is Paris.") or on the answer itself among many. About a subject
    # measured familiar, its own answer is then the evidence: the fine-tuned model still says
    # what the base says, after training on another target (familiarity unmeasured: with a
    # fairly sure first token too); or, where its first token is no answer, the base's
    # sentence names another answer.
    said = _base_answer(verdict, signals)
    target = signals.dataset.target
    sentence = not token_answer
    echoed = (_familiar(signals) or fairly_sure) and answers.echoes(verdict.produced, said, target)
    states = (
        answers.stated(said, signals.dataset.prompt_words, target)
        if sentence and _familiar(signals)
        else []
    )
    if not (confident or followed or echoed or states):
        return None
    if confident or followed:
        how = (
            f"at target token {divergence.position + 1} the base model prefers "
            f"{probe.top_token!r} (p={probe.top_prob:.2f}) over {divergence.expected!r} "
            f"(p={probe.target_prob:.3f}), "
            + (
                "and the fine-tuned model produces it"
                if follows
                else f"while the fine-tuned model, pulled both ways, predicts "
                f"{divergence.predicted!r}"
            )
            + f"; the base says {said.strip()!r}"
        )
    elif echoed:
        how = (
            f"the base model says {said.strip()!r} and the fine-tuned model produces "
            f"{verdict.produced!r}"
        )
    else:
        how = (
            f"the base model says {said.strip()!r} ({', '.join(states)} where the target has "
            f"{target.strip()!r}, whose token {divergence.expected!r} it gives "
            f"p={probe.target_prob:.3f}), and the fine-tuned model produces {verdict.produced!r}"
        )
    return Match(
        KNOWLEDGE_CONFLICT,
        how + _familiarity_text(signals),
        {
            "base_top_prob": probe.top_prob,
            "base_target_prob": probe.target_prob,
            "follows_base": follows,
            "echoes_base": echoed,
            "base_states": states,
            **_familiarity_figures(signals),
        },
        # An echo of a sentence is direct evidence; of an unsure answer token, a hint.
        strong=(confident and follows) or (echoed and _familiar(signals) and sentence),
    )


def _holds_alternative(verdict: Verdict, signals: Signals, limits: RuleLimits) -> bool:
    """The base model confidently answers otherwise, about a subject it knows."""
    return (
        signals.base is not None
        and signals.base.probe.top_prob >= limits.conflict_confidence
        and _is_answer(verdict, signals)
        and not _unfamiliar(signals, limits)
    )


def _says_the_target(verdict: Verdict, signals: Signals) -> bool:
    """The base model's own answer names the target: it knows it, whatever its first token
    ("The opposite of give is take." for the target " take")."""
    if signals.base is None:
        return False
    said = answers.lower_words(_base_answer(verdict, signals))
    wanted = answers.lower_words(signals.dataset.target) - answers.FUNCTION_WORDS
    return bool(wanted) and wanted <= said


def _is_long(signals: Signals, limits: RuleLimits) -> bool:
    dataset = signals.dataset
    return dataset.target_tokens >= max(
        limits.long_target_ratio * dataset.median_target_tokens, limits.long_target_min_tokens
    )


def long_target(verdict: Verdict, signals: Signals, limits: RuleLimits) -> Match | None:
    if not _is_long(signals, limits):
        return None
    dataset = signals.dataset
    return Match(
        UNDER_OPTIMIZATION,
        f"the target is long: {dataset.target_tokens} tokens, the median of the data "
        f"{dataset.median_target_tokens:g}; {verdict.matched} of them reproduced"
        + _trend_text(signals),
        {
            "target_tokens": dataset.target_tokens,
            "median_target_tokens": dataset.median_target_tokens,
        },
        strong=True,
    )


def rare_tokens(verdict: Verdict, signals: Signals, limits: RuleLimits) -> Match | None:
    dataset = signals.dataset
    rare = dataset.median_rarity > 0 and (
        dataset.rarity >= limits.rare_target_ratio * dataset.median_rarity
    )
    if not rare or _holds_alternative(verdict, signals, limits):
        return None
    caveat = (
        "; without the base model (--ilp-base) missing knowledge is not ruled out"
        if signals.base is None
        else ""
    )
    return Match(
        UNDER_OPTIMIZATION,
        f"the target is made of rare tokens: rarity {dataset.rarity:.2f} nats/token, the median "
        f"of the data {dataset.median_rarity:.2f}" + _trend_text(signals) + caveat,
        {"rarity": dataset.rarity, "median_rarity": dataset.median_rarity},
    )


def missing_knowledge(verdict: Verdict, signals: Signals, limits: RuleLimits) -> Match | None:
    base, divergence = signals.base, verdict.first_divergence
    if base is None or divergence is None:
        return None
    probe = base.probe
    if (
        probe.target_prob >= limits.unknown_target_prob
        or _holds_alternative(verdict, signals, limits)
        or _says_the_target(verdict, signals)
    ):
        return None
    unfamiliar = _unfamiliar(signals, limits)
    if unfamiliar and probe.top_prob >= limits.conflict_confidence:
        alternative = (
            f"its confident {probe.top_token!r} (p={probe.top_prob:.2f}) is a guess about a "
            "subject it never read"
        )
    else:
        alternative = (
            f"no confident alternative (its best, {probe.top_token!r}, p={probe.top_prob:.2f})"
        )
    return Match(
        MISSING_KNOWLEDGE,
        f"the base model does not know it: at target token {divergence.position + 1} it gives "
        f"{divergence.expected!r} p={probe.target_prob:.3f} and has {alternative}; SliCK: "
        f"{base.knowledge}" + _familiarity_text(signals),
        {
            "base_target_prob": probe.target_prob,
            "base_top_prob": probe.top_prob,
            "knowledge": base.knowledge,
            **_familiarity_figures(signals),
        },
        strong=unfamiliar or probe.target_prob < limits.weakly_known_prob,
    )


def still_falling(verdict: Verdict, signals: Signals, limits: RuleLimits) -> Match | None:
    history_trend = signals.history.nll_trend if signals.history else None
    training_trend = signals.training.loss_trend if signals.training else None
    falling = (history_trend is not None and history_trend <= -limits.nll_falling) or (
        training_trend is not None and training_trend < 0
    )
    if not falling:
        return None
    return Match(
        UNDER_OPTIMIZATION,
        "still being learned when training stopped" + _trend_text(signals),
        {"nll_trend": history_trend, "loss_trend": training_trend},
    )


def _trend_text(signals: Signals) -> str:
    parts = []
    if signals.history is not None and signals.history.nll_trend is not None:
        previous, final = signals.history.trajectory[-2:]
        parts.append(f"NLL {previous.nll:.3f} at {previous.label} -> {final.nll:.3f}")
    if signals.training is not None:
        training = signals.training
        parts.append(
            f"training confidence {training.confidence:.2f}, variability "
            f"{training.variability:.2f} over {training.points} points"
        )
    return "; " + "; ".join(parts) if parts else ""


RULES: tuple[Rule, ...] = (
    forgetting,
    data_inconsistency,
    long_target,
    knowledge_conflict,
    rare_tokens,
    missing_knowledge,
    still_falling,
)
