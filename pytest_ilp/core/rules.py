"""The rules that read the data, the earlier checkpoints and the training log: forgetting,
data inconsistency, under-optimization. `core.diagnosis` says where they stand in the order of
the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_ilp.core.causes import DATA_INCONSISTENCY, FORGETTING, UNDER_OPTIMIZATION
from pytest_ilp.core.knowledge_rules import holds_alternative
from pytest_ilp.core.rule_limits import Match, RuleLimits

if TYPE_CHECKING:
    from pytest_ilp.core.signals import Signals
    from pytest_ilp.core.verdicts import Verdict


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
    if not rare or holds_alternative(verdict, signals, limits):
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
