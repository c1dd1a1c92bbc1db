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

Every threshold is a field of `Thresholds`, set in ilp.yaml under `diagnosis:`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
class Thresholds:
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


Rule = Callable[["Verdict", "Signals", Thresholds], "Match | None"]


def diagnose(sample: Sample, verdict: Verdict, signals: Signals, limits: Thresholds) -> Diagnosis:
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


def _near_miss(verdict: Verdict, limits: Thresholds) -> bool:
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


def forgetting(verdict: Verdict, signals: Signals, limits: Thresholds) -> Match | None:
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


def data_inconsistency(verdict: Verdict, signals: Signals, limits: Thresholds) -> Match | None:
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


def _unfamiliar(signals: Signals, limits: Thresholds) -> bool:
    """The base model finds the prompt's subject far more surprising than the data's usual:
    it never read about it, so a confident answer of its own is a guess, not knowledge."""
    familiarity = signals.base.familiarity if signals.base is not None else None
    return familiarity is not None and familiarity.ratio >= limits.unfamiliar_ratio


def _is_answer(signals: Signals) -> bool:
    """The base model's token at the divergence can start an answer: it holds a letter or a
    digit, and it is a token the data's targets give there (not '?', '.', a newline or a
    template word such as " The", which a base model often prefers where an answer starts)."""
    base = signals.base
    return base is not None and base.answers and any(ch.isalnum() for ch in base.probe.top_token)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _says_what_the_base_says(verdict: Verdict, signals: Signals) -> bool:
    """The fine-tuned model's answer is in the base model's own answer: "Beijing" where the base
    says "The capital of China is Beijing." (a real base model answers in a sentence, so its
    first token is no answer, but the sentence is)."""
    base = signals.base
    if base is None or not verdict.produced:
        return False
    produced = _words(verdict.produced.split("\n", 1)[0]) - _words(signals.dataset.target)
    said = _words(_first_line(base.probe.continuation))
    return bool(produced) and produced <= said and not _words(signals.dataset.target) <= said


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


def knowledge_conflict(verdict: Verdict, signals: Signals, limits: Thresholds) -> Match | None:
    base, divergence = signals.base, verdict.first_divergence
    if base is None or divergence is None or _unfamiliar(signals, limits):
        return None
    probe = base.probe
    answer = probe.top_id != divergence.expected_id and _is_answer(signals)
    follows = probe.top_id == divergence.predicted_id
    # The base holds another answer about a subject it knows: confidently, or less surely but
    # the fine-tuned model produces that same answer, or the fine-tuned model says what the
    # base model's own answer says.
    # (Never a higher bar than `conflict_confidence`; with both past 1, no conflict is left.)
    fairly_sure = probe.top_prob >= min(limits.answer_confidence, limits.conflict_confidence)
    confident = answer and probe.top_prob >= limits.conflict_confidence
    followed = answer and follows and fairly_sure
    echoed = fairly_sure and _says_what_the_base_says(verdict, signals)
    if not (confident or followed or echoed):
        return None
    if echoed and not (confident or followed):
        how = (
            f"the base model says {_first_line(probe.continuation).strip()!r} and the "
            f"fine-tuned model produces {verdict.produced!r}"
        )
    else:
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
            + f"; the base says {_first_line(probe.continuation)!r}"
        )
    return Match(
        KNOWLEDGE_CONFLICT,
        how + _familiarity_text(signals),
        {
            "base_top_prob": probe.top_prob,
            "base_target_prob": probe.target_prob,
            "follows_base": follows,
            "echoes_base": echoed,
            **_familiarity_figures(signals),
        },
        strong=(confident and follows) or (echoed and base.familiarity is not None),
    )


def _first_line(text: str) -> str:
    """A base model does not stop where its answer ends: show the answer's line."""
    first = text.split("\n", 1)[0]
    return first if first.strip() else text


def _holds_alternative(signals: Signals, limits: Thresholds) -> bool:
    """The base model confidently answers otherwise, about a subject it knows."""
    return (
        signals.base is not None
        and signals.base.probe.top_prob >= limits.conflict_confidence
        and _is_answer(signals)
        and not _unfamiliar(signals, limits)
    )


def _is_long(signals: Signals, limits: Thresholds) -> bool:
    dataset = signals.dataset
    return dataset.target_tokens >= max(
        limits.long_target_ratio * dataset.median_target_tokens, limits.long_target_min_tokens
    )


def long_target(verdict: Verdict, signals: Signals, limits: Thresholds) -> Match | None:
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


def rare_tokens(verdict: Verdict, signals: Signals, limits: Thresholds) -> Match | None:
    dataset = signals.dataset
    rare = dataset.median_rarity > 0 and (
        dataset.rarity >= limits.rare_target_ratio * dataset.median_rarity
    )
    if not rare or _holds_alternative(signals, limits):
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


def missing_knowledge(verdict: Verdict, signals: Signals, limits: Thresholds) -> Match | None:
    base, divergence = signals.base, verdict.first_divergence
    if base is None or divergence is None:
        return None
    probe = base.probe
    if probe.target_prob >= limits.unknown_target_prob or _holds_alternative(signals, limits):
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


def still_falling(verdict: Verdict, signals: Signals, limits: Thresholds) -> Match | None:
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
