"""The rules that read the base model (`--ilp-base`): knowledge conflict and missing knowledge,
and what they ask of the base model (is the subject familiar to it, is its token an answer,
what does it say). `core.diagnosis` says where they stand in the order of the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_ilp.core import answers
from pytest_ilp.core.causes import KNOWLEDGE_CONFLICT, MISSING_KNOWLEDGE
from pytest_ilp.core.rule_limits import Match, RuleLimits

if TYPE_CHECKING:
    from pytest_ilp.core.signals import Signals
    from pytest_ilp.core.verdicts import Verdict


def _unfamiliar(signals: Signals, limits: RuleLimits) -> bool:
    """The base model finds the prompt's subject far more surprising than the data's usual:
    it never read about it, so a confident answer of its own is a guess, not knowledge."""
    familiarity = signals.base.familiarity if signals.base is not None else None
    return familiarity is not None and familiarity.ratio >= limits.unfamiliar_ratio


def _default_guess(verdict: Verdict, signals: Signals, limits: RuleLimits) -> bool:
    """The base model's token at the divergence is an answer, and the one it begins many
    answers with, to questions with many different targets, mostly wrongly: its default for
    the question, not knowledge of this subject (`signals.AnswerHabit`)."""
    habit = signals.base.habit if signals.base is not None else None
    return (
        habit is not None
        and habit.is_default(limits.default_answer_prompts)
        and _is_answer(verdict, signals)
    )


def _guess_text(signals: Signals) -> str:
    assert signals.base is not None and signals.base.habit is not None
    habit = signals.base.habit
    return (
        f"its {signals.base.probe.top_token!r} (p={signals.base.probe.top_prob:.2f}) is the "
        f"answer it begins with on {habit.given} scored prompts with {habit.targets} different "
        f"targets, right on {habit.right} of the {habit.learned} learned ones: a default "
        "guess, not knowledge of the subject"
    )


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


def _habit_figures(signals: Signals) -> dict[str, Any]:
    habit = signals.base.habit if signals.base is not None else None
    if habit is None:
        return {}
    return {
        "base_answer_given": habit.given,
        "base_answer_right": habit.right,
        "base_answer_learned": habit.learned,
    }


def holds_alternative(verdict: Verdict, signals: Signals, limits: RuleLimits) -> bool:
    """The base model confidently answers otherwise, about a subject it knows."""
    return (
        signals.base is not None
        and signals.base.probe.top_prob >= limits.conflict_confidence
        and _is_answer(verdict, signals)
        and not _unfamiliar(signals, limits)
        and not _default_guess(verdict, signals, limits)
    )


def _says_the_target(verdict: Verdict, signals: Signals) -> bool:
    """The base model's own answer names the target: it knows it, whatever its first token
    ("The opposite of give is take." for the target " take")."""
    if signals.base is None:
        return False
    said = answers.lower_words(_base_answer(verdict, signals))
    wanted = answers.lower_words(signals.dataset.target) - answers.FUNCTION_WORDS
    return bool(wanted) and wanted <= said


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
    # Its default answer to the question is no knowledge to contradict, however sure (a
    # sentence that names another answer still is: its first token is no answer).
    guess = _default_guess(verdict, signals, limits)
    answer = token_answer and probe.top_id != divergence.expected_id and not guess
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
    echoed = (
        not guess
        and (_familiar(signals) or fairly_sure)
        and answers.echoes(verdict.produced, said, target)
    )
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


def missing_knowledge(verdict: Verdict, signals: Signals, limits: RuleLimits) -> Match | None:
    base, divergence = signals.base, verdict.first_divergence
    if base is None or divergence is None:
        return None
    probe = base.probe
    if (
        probe.target_prob >= limits.unknown_target_prob
        or holds_alternative(verdict, signals, limits)
        or _says_the_target(verdict, signals)
    ):
        return None
    unfamiliar = _unfamiliar(signals, limits)
    if _default_guess(verdict, signals, limits):
        alternative = _guess_text(signals)
    elif unfamiliar and probe.top_prob >= limits.conflict_confidence:
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
            **_habit_figures(signals),
        },
        strong=unfamiliar or probe.target_prob < limits.weakly_known_prob,
    )
