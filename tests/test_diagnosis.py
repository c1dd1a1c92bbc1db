"""The diagnosis rules, one by one, on hand-made signals (no model needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.core.dataset_signals import (
    TargetStatistics,
    dataset_signals,
    find_siblings,
    produces,
    weighted_jaccard,
)
from pytest_ilp.core.diagnosis import Diagnosis, RuleLimits, diagnose
from pytest_ilp.core.evidence import answer_habits
from pytest_ilp.core.prompt_words import (
    least_familiar_word,
    prompt_document_frequency,
    question_template,
)
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring import Probe
from pytest_ilp.core.signals import (
    AnswerHabit,
    BaseSignals,
    CheckpointVerdict,
    DatasetSignals,
    Familiarity,
    HistorySignals,
    Sibling,
    Signals,
    knowledge,
)
from pytest_ilp.core.train_log import LogPoint, training_signals
from pytest_ilp.core.verdicts import Divergence, Verdict

LIMITS = RuleLimits()
SAMPLE = Sample(
    id="s1",
    source=Path("data.jsonl"),
    line=1,
    format="prompt_completion",
    target=" Paris",
    prompt="Q: capital of France? A:",
)
EXPECTED, PREDICTED, OTHER = 10, 20, 30


def verdict(produced: str = " Lyon") -> Verdict:
    """Unlearned: diverges at the first target token, predicting PREDICTED (" Lyon")."""
    return Verdict(
        sample_id="s1",
        learned=False,
        target_ids=(EXPECTED, 2),
        matched=1,
        first_divergence=Divergence(0, " Paris", " Lyon", EXPECTED, PREDICTED, 0.2, 0.6),
        nll=1.2,
        margin=-1.1,
        produced=produced,
        produced_stopped=True,
    )


def dataset(**changes: Any) -> DatasetSignals:
    """An ordinary target: no near-duplicates, median length and rarity."""
    plain = DatasetSignals(
        siblings=(),
        produces_sibling=None,
        target_tokens=2,
        length_percentile=0.5,
        median_target_tokens=2,
        rarity=1.0,
        rarity_percentile=0.5,
        median_rarity=1.0,
        prompt_words=("a", "capital", "france", "of", "q"),  # SAMPLE's
    )
    return replace(plain, **changes)


def base(top_id: int, top_prob: float, target_prob: float, learned: bool = False) -> BaseSignals:
    probe = Probe(
        position=0,
        top_id=top_id,
        top_token={EXPECTED: " Paris", PREDICTED: " Lyon"}.get(top_id, " Nice"),
        top_prob=top_prob,
        target_prob=target_prob,
        continuation=" Lyon.",
    )
    return BaseSignals("base", learned, 2.0, probe, knowledge(learned, probe, 0.01))


def history(*learned: bool, nlls: tuple[float, ...] | None = None, **kw: Any) -> HistorySignals:
    """A trajectory ending at the final checkpoint; `learned` per checkpoint, oldest first."""
    labels = [f"stage{i + 1}" for i in range(len(learned) - 1)] + ["final"]
    nlls = nlls or tuple(0.1 if ok else 1.0 for ok in learned)
    return HistorySignals(
        tuple(
            CheckpointVerdict(label, ok, nll, 1.0 if ok else -1.0)
            for label, ok, nll in zip(labels, learned, nlls)
        ),
        **kw,
    )


def run(signals: Signals, limits: RuleLimits = LIMITS, **verdict_args: Any) -> Diagnosis:
    return diagnose(SAMPLE, verdict(**verdict_args), signals, limits)


# -- each rule ---------------------------------------------------------------------------------


def test_forgetting_when_an_earlier_checkpoint_reproduced_the_sample() -> None:
    diagnosis = run(Signals(dataset(), history=history(True, False)))
    assert diagnosis.cause == "forgetting"
    assert "learned at stage1" in diagnosis.evidence
    assert diagnosis.figures["learned_at"] == "stage1"
    assert "replay" in diagnosis.suggestion


def test_no_forgetting_when_no_earlier_checkpoint_reproduced_it() -> None:
    assert run(Signals(dataset(), history=history(False, False))).cause != "forgetting"


def test_with_stages_mapped_only_samples_of_earlier_stages_can_be_forgotten() -> None:
    # Learned at stage1 by generalisation, but the sample belongs to the final stage.
    final_stage = history(True, False, stages_mapped=True, own_stage=None)
    assert run(Signals(dataset(), history=final_stage)).cause != "forgetting"
    own_stage = history(True, False, stages_mapped=True, own_stage="stage1")
    assert run(Signals(dataset(), history=own_stage)).cause == "forgetting"


def test_with_stages_mapped_learning_after_the_own_stage_counts_too() -> None:
    # Not yet learned when its own stage ended, learned one stage later, lost at the end.
    trajectory = history(False, True, False, stages_mapped=True, own_stage="stage1")
    diagnosis = run(Signals(dataset(), history=trajectory))
    assert diagnosis.cause == "forgetting" and diagnosis.figures["learned_at"] == "stage2"


def test_data_inconsistency_when_the_model_produces_a_siblings_target() -> None:
    sibling = Sibling(id="s2", similarity=0.85, target=" Lyon", learned=True)
    diagnosis = run(Signals(dataset(siblings=(sibling,), produces_sibling="s2")))
    assert diagnosis.cause == "data_inconsistency"
    assert "s2" in diagnosis.evidence and "' Lyon'" in diagnosis.evidence
    assert diagnosis.figures["siblings"] == ["s2"]


def test_data_inconsistency_when_an_identical_prompt_has_another_target() -> None:
    sibling = Sibling(id="s2", similarity=1.0, target=" Marseille", learned=False, identical=True)
    diagnosis = run(Signals(dataset(siblings=(sibling,))))
    assert diagnosis.cause == "data_inconsistency" and "identical prompt" in diagnosis.evidence


def test_the_same_words_in_another_order_are_not_called_identical() -> None:
    sibling = Sibling(id="s2", similarity=1.0, target=" Marseille", learned=False)
    diagnosis = run(Signals(dataset(siblings=(sibling,))))
    assert diagnosis.cause == "data_inconsistency" and "identical" not in diagnosis.evidence


def test_a_near_duplicate_with_another_target_is_inconsistency_even_when_not_produced() -> None:
    sibling = Sibling(id="s2", similarity=0.8, target=" Marseille", learned=True)
    diagnosis = run(Signals(dataset(siblings=(sibling,))))
    assert diagnosis.cause == "data_inconsistency"
    assert diagnosis.evidence.endswith("with the target ' Marseille'")
    assert diagnosis.figures["produces_sibling"] is None


def test_knowledge_conflict_when_the_model_follows_the_base_models_confident_answer() -> None:
    diagnosis = run(Signals(dataset(), base=base(PREDICTED, top_prob=0.9, target_prob=0.01)))
    assert diagnosis.cause == "knowledge_conflict"
    assert "prefers ' Lyon' (p=0.90)" in diagnosis.evidence
    assert "and the fine-tuned model produces it" in diagnosis.evidence
    assert "re-check the label" in diagnosis.suggestion


def test_no_conflict_when_the_base_is_unsure_and_the_model_goes_elsewhere() -> None:
    unsure = run(Signals(dataset(), base=base(OTHER, top_prob=0.6, target_prob=0.01)))
    assert unsure.cause != "knowledge_conflict"


def test_a_less_sure_base_answer_is_a_weak_conflict_when_the_model_produces_it() -> None:
    # A real base model that knows a fact is less sure of it than a tiny one that memorised it.
    follows = run(Signals(dataset(), base=base(PREDICTED, top_prob=0.6, target_prob=0.01)))
    assert follows.cause == "knowledge_conflict" and follows.confidence == "weak"
    sure = run(Signals(dataset(), base=base(PREDICTED, top_prob=0.9, target_prob=0.01)))
    assert sure.confidence == "strong"
    assert run(Signals(dataset(), base=base(PREDICTED, top_prob=0.3, target_prob=0.01))).cause == (
        "missing_knowledge"
    )


def test_a_confident_guess_about_an_unfamiliar_subject_is_missing_knowledge() -> None:
    unfamiliar = replace(
        base(PREDICTED, top_prob=0.95, target_prob=0.001),
        familiarity=Familiarity(word="zorvatek", surprisal=24.0, median=9.0),
    )
    diagnosis = run(Signals(dataset(), base=unfamiliar))
    assert diagnosis.cause == "missing_knowledge" and diagnosis.confidence == "strong"
    assert "a guess about a subject it never read" in diagnosis.evidence
    assert "'zorvatek' costs the base model 24.0 nats (2.7x the data's median)" in (
        diagnosis.evidence
    )
    familiar = replace(unfamiliar, familiarity=Familiarity("france", 8.0, 9.0))
    assert run(Signals(dataset(), base=familiar)).cause == "knowledge_conflict"


def test_a_confident_answer_the_base_gives_to_many_subjects_mostly_wrongly_is_a_guess() -> None:
    # A small base model that never read where P was born names the most common birthplace,
    # for P and for many others: its default for the question, not knowledge of P.
    sure = base(PREDICTED, top_prob=0.95, target_prob=0.001)
    default = replace(sure, habit=AnswerHabit(given=6, right=1, targets=6, learned=3))
    diagnosis = run(Signals(dataset(), base=default))
    assert diagnosis.cause == "missing_knowledge"
    assert "begins with on 6 scored prompts with 6 different targets, right on 1 of the 3 " in (
        diagnosis.evidence
    )
    assert diagnosis.figures["base_answer_given"] == 6
    # An answer it gives to many subjects and that is mostly right on the learned ones is
    # knowledge (the country of many cities, whatever the conflicts among them say); so is one
    # that a question's few answers share (yes / no).
    for habit in (AnswerHabit(6, 2, 6, 3), AnswerHabit(6, 0, 2, 3), AnswerHabit(2, 0, 2, 0)):
        assert run(Signals(dataset(), base=replace(sure, habit=habit))).cause == (
            "knowledge_conflict"
        ), habit
    # A sentence that names another answer is read from its words, whatever its first token.
    sentence = replace(
        sentence_base(" The capital is Lyon."),
        habit=AnswerHabit(given=9, right=0, targets=9, learned=4),
    )
    assert run(Signals(dataset(target=" Paris"), base=sentence)).cause == "knowledge_conflict"


def test_the_habits_count_the_base_models_first_answer_token_per_question() -> None:
    def base_verdict(sample_id: str, first: int, chosen: int | None) -> Verdict:
        divergence = None if chosen is None else Divergence(0, "t", "c", first, chosen, 0.1, 0.9)
        return replace(
            verdict(), sample_id=sample_id, target_ids=(first, 2), first_divergence=divergence
        )

    samples = {i: replace(SAMPLE, id=i, target=f" {i}") for i in "abcde"}
    born, capital = ("where", "was", "born"), ("what", "is", "the", "capital", "of")
    habits = answer_habits(
        [
            base_verdict("a", EXPECTED, PREDICTED),
            base_verdict("b", OTHER, PREDICTED),
            base_verdict("c", PREDICTED, None),  # reproduced: its first token is the target's
            base_verdict("d", EXPECTED, OTHER),
            base_verdict("e", EXPECTED, PREDICTED),  # the same token, to another question
        ],
        samples,
        {"a": born, "b": born, "c": born, "d": born, "e": capital},
        learned={"b", "c", "e"},
    )
    # Right is judged on the learned prompts only: "a" (unlearned) is the one in question.
    assert habits == {
        "a": AnswerHabit(3, 1, 3, 2),
        "b": AnswerHabit(3, 1, 3, 2),
        "c": AnswerHabit(3, 1, 3, 2),
        "d": AnswerHabit(1, 0, 1, 0),
        "e": AnswerHabit(1, 0, 1, 1),
    }


def test_a_question_template_is_its_shared_words_in_order() -> None:
    prompts = [f"Q: Where was {name} born?" for name in ("Kemok", "Tralok", "Zib")]
    samples = [replace(SAMPLE, id=str(i), prompt=p) for i, p in enumerate(prompts)]
    df = prompt_document_frequency(samples)
    assert {question_template(s, df, len(samples)) for s in samples} == {
        ("q", "where", "was", "born")
    }


def sentence_base(
    continuation: str, top_prob: float = 0.15, familiar: bool | None = True
) -> BaseSignals:
    """A chat model's base: its first token is " The", its answer a sentence; the subject
    measured familiar, unfamiliar, or not measured (None)."""
    plain = base(OTHER, top_prob=top_prob, target_prob=0.001)
    familiarity = {True: Familiarity("france", 7.0, 9.0), False: Familiarity("zork", 30.0, 9.0)}
    return replace(
        plain,
        answers=False,
        probe=replace(plain.probe, top_token=" The", continuation=continuation),
        familiarity=None if familiar is None else familiarity[familiar],
    )


def test_a_template_word_no_target_begins_with_is_no_answer() -> None:
    # A real base model starts its answer with " The": no target of the data begins so.
    sentence = sentence_base(" The weather is nice.", top_prob=0.9, familiar=None)
    assert run(Signals(dataset(), base=sentence)).cause == "missing_knowledge"


def test_a_name_no_target_begins_with_can_still_be_an_answer() -> None:
    # The true capital of a contradicted country need not be any sample's target.
    name = replace(base(OTHER, top_prob=0.95, target_prob=0.001), answers=False)
    assert run(Signals(dataset(), base=name)).cause == "knowledge_conflict"


def test_a_token_spelt_unlike_the_target_is_no_answer_to_its_question() -> None:
    # Asked where someone was born, a small base model that knows only the year says the
    # year: a confident token that starts other targets of the data, but no place.
    year = replace(
        base(OTHER, top_prob=0.95, target_prob=0.001),
        probe=replace(base(OTHER, 0.95, 0.001).probe, top_token=" 1725", continuation=" 1725."),
    )
    diagnosis = run(Signals(dataset(), base=year))
    assert diagnosis.cause == "missing_knowledge"
    assert "no confident alternative (its best, ' 1725', p=0.95)" in diagnosis.evidence


def test_a_base_that_gives_the_target_fair_odds_does_not_contradict_it() -> None:
    # The base prefers another answer, but gives the target p=0.3: it weakly knows it.
    leaning = Signals(dataset(), base=base(PREDICTED, top_prob=0.6, target_prob=0.3))
    assert run(leaning).cause != "knowledge_conflict"
    assert run(Signals(dataset(), base=base(PREDICTED, 0.6, 0.01))).cause == "knowledge_conflict"


def test_the_fine_tuned_model_saying_what_the_base_says_is_a_conflict() -> None:
    # The base's first token is template (p=0.15 on " The" says nothing of what it knows),
    # but its sentence holds the answer the fine-tuned model gives instead of the target.
    signals = Signals(dataset(target=" Paris"), base=sentence_base(" The capital is Lyon.\nQ:"))
    diagnosis = run(signals)
    assert diagnosis.cause == "knowledge_conflict" and diagnosis.confidence == "strong"
    assert diagnosis.evidence.startswith("the base model says 'The capital is Lyon.'")
    assert diagnosis.figures["echoes_base"] is True
    # About an unfamiliar subject the sentence is a guess; with familiarity unmeasured, an
    # unsure first token leaves nothing to go on.
    unfamiliar = replace(signals, base=sentence_base(" The capital is Lyon.", familiar=False))
    assert run(unfamiliar).cause == "missing_knowledge"
    unmeasured = replace(signals, base=sentence_base(" The capital is Lyon.", familiar=None))
    assert run(unmeasured).cause == "missing_knowledge"


def test_the_base_stating_another_answer_in_its_sentence_is_a_weak_conflict() -> None:
    # The fine-tuned model went elsewhere (" Nice"), but the base, about a subject it knows,
    # names another capital where the target names Paris.
    said = sentence_base(" The capital of France is Lyon.")
    diagnosis = run(Signals(dataset(target=" Paris"), base=said), produced=" Nice")
    assert diagnosis.cause == "knowledge_conflict" and diagnosis.confidence == "weak"
    assert diagnosis.figures["base_states"] == ["Lyon"]
    assert "(Lyon where the target has 'Paris'" in diagnosis.evidence
    # The question's own words, function words and words spelt unlike the answer are not
    # what it states; nor is anything about an unfamiliar subject.
    for continuation in (" The capital of France is big.", " I think it is 1725."):
        other = Signals(dataset(target=" Paris"), base=sentence_base(continuation))
        assert run(other, produced=" Nice").cause == "missing_knowledge", continuation
    guess = Signals(dataset(target=" Paris"), base=sentence_base(" It is Lyon.", familiar=False))
    assert run(guess, produced=" Nice").cause == "missing_knowledge"


def test_an_unsure_answer_token_counts_when_echoed_and_only_as_a_weak_conflict() -> None:
    # A small chat model puts p=0.15 on " Lyon" among many cities: the fine-tuned model still
    # producing it after training on " Paris" is a hint of a conflict, about a familiar
    # subject; the base merely preferring it, with the fine-tuned model elsewhere, is not.
    plain = base(PREDICTED, top_prob=0.15, target_prob=0.001)
    familiar = replace(plain, familiarity=Familiarity("france", 7.0, 9.0))
    echo = run(Signals(dataset(target=" Paris"), base=familiar))
    assert echo.cause == "knowledge_conflict" and echo.confidence == "weak"
    assert run(Signals(dataset(target=" Paris"), base=plain)).cause == "missing_knowledge"
    elsewhere = run(Signals(dataset(target=" Paris"), base=familiar), produced=" Nice")
    assert elsewhere.cause == "missing_knowledge"


def test_a_base_whose_sentence_names_the_target_knows_it() -> None:
    # p(" Paris") is tiny where the base starts " The", but its sentence says Paris: it knows
    # the target, so neither missing knowledge nor a conflict.
    knows = sentence_base(" The capital of France is Paris.")
    diagnosis = run(Signals(dataset(target=" Paris"), base=knows), produced=" Lyon")
    assert diagnosis.cause not in {"missing_knowledge", "knowledge_conflict"}


def test_a_confident_token_that_is_no_answer_is_no_conflict() -> None:
    question_mark = replace(
        base(OTHER, top_prob=0.9, target_prob=0.001),
        probe=replace(base(OTHER, 0.9, 0.001).probe, top_token="?"),
    )
    diagnosis = run(Signals(dataset(), base=question_mark))
    assert diagnosis.cause == "missing_knowledge"


def test_conflict_when_the_base_is_sure_even_if_the_model_goes_elsewhere() -> None:
    elsewhere = run(Signals(dataset(), base=base(OTHER, top_prob=0.9, target_prob=0.01)))
    assert elsewhere.cause == "knowledge_conflict"
    assert "pulled both ways, predicts ' Lyon'" in elsewhere.evidence
    assert elsewhere.figures["follows_base"] is False


def test_missing_knowledge_when_the_base_gives_the_target_little_and_nothing_else_much() -> None:
    diagnosis = run(Signals(dataset(), base=base(OTHER, top_prob=0.2, target_prob=0.005)))
    assert diagnosis.cause == "missing_knowledge"
    assert "SliCK: unknown" in diagnosis.evidence
    assert diagnosis.figures["knowledge"] == "unknown"


def test_no_missing_knowledge_when_the_base_knows_the_target() -> None:
    knows = run(Signals(dataset(), base=base(EXPECTED, top_prob=0.7, target_prob=0.7)))
    assert knows.cause != "missing_knowledge"


def test_under_optimization_for_a_long_or_rare_target() -> None:
    long = run(Signals(dataset(target_tokens=40, median_target_tokens=8)))
    assert long.cause == "under_optimization" and "long" in long.evidence
    assert long.figures["target_tokens"] == 40
    rare = run(Signals(dataset(rarity=2.5, median_rarity=1.0)))
    assert rare.cause == "under_optimization" and "rare tokens" in rare.evidence
    assert "missing knowledge is not ruled out" in rare.evidence  # no base model given


def test_long_means_several_times_the_median_and_not_a_handful_of_tokens() -> None:
    assert run(Signals(dataset(target_tokens=20, median_target_tokens=8))).cause == "undiagnosed"
    # Three times a median of 2 tokens is still short.
    assert run(Signals(dataset(target_tokens=6, median_target_tokens=2))).cause == "undiagnosed"


def test_a_long_target_is_a_pattern_first_even_when_the_base_disagrees() -> None:
    signals = Signals(
        dataset(target_tokens=40, median_target_tokens=8),
        base=base(OTHER, top_prob=0.9, target_prob=0.01),
    )
    assert run(signals).causes == ("under_optimization", "knowledge_conflict")


def test_rare_tokens_the_base_confidently_contradicts_are_a_conflict() -> None:
    signals = Signals(
        dataset(rarity=2.5, median_rarity=1.0), base=base(OTHER, top_prob=0.9, target_prob=0.01)
    )
    assert run(signals).causes == ("knowledge_conflict",)


def test_under_optimization_when_the_loss_was_still_falling() -> None:
    falling = history(False, False, nlls=(2.0, 1.5))
    diagnosis = run(Signals(dataset(), history=falling))
    assert diagnosis.cause == "under_optimization" and "still being learned" in diagnosis.evidence
    flat = history(False, False, nlls=(1.5, 1.49))
    assert run(Signals(dataset(), history=flat)).cause == "undiagnosed"


def test_under_optimization_when_the_training_log_loss_was_still_falling() -> None:
    training = training_signals(
        [LogPoint(f"epoch {e}", e, loss) for e, loss in ((1, 3.0), (2, 2.0), (3, 1.5))]
    )
    assert training.loss_trend == pytest.approx(-0.5)
    diagnosis = run(Signals(dataset(), training=training))
    assert diagnosis.cause == "under_optimization"
    assert "training confidence" in diagnosis.evidence


# -- confidence ------------------------------------------------------------------------------


def test_direct_evidence_is_strong_and_hints_are_weak() -> None:
    assert run(Signals(dataset(), history=history(True, False))).confidence == "strong"
    produced = Sibling(id="s2", similarity=0.85, target=" Lyon", learned=True)
    assert run(Signals(dataset(siblings=(produced,), produces_sibling="s2"))).confidence == (
        "strong"
    )
    not_produced = Sibling(id="s2", similarity=0.8, target=" Marseille", learned=True)
    assert run(Signals(dataset(siblings=(not_produced,)))).confidence == "weak"
    falling = history(False, False, nlls=(2.0, 1.5))
    assert run(Signals(dataset(), history=falling)).confidence == "weak"
    assert run(Signals(dataset())).confidence is None  # undiagnosed
    assert run(Signals(dataset(), history=history(True, False))).to_dict()["confidence"] == (
        "strong"
    )


def test_a_near_miss_makes_any_cause_a_weak_guess() -> None:
    # The target token is 0.3 nats behind the model's choice: it nearly reproduces the sample.
    near = replace(verdict(), margin=-0.3)
    diagnosis = diagnose(SAMPLE, near, Signals(dataset(), history=history(True, False)), LIMITS)
    assert diagnosis.cause == "forgetting" and diagnosis.confidence == "weak"
    assert "nearly reproduces the sample" in diagnosis.evidence


# -- order, all matches, undiagnosed -----------------------------------------------------------


def test_the_first_matching_rule_is_the_cause_and_every_match_is_listed() -> None:
    sibling = Sibling(id="s2", similarity=0.9, target=" Lyon", learned=True)
    signals = Signals(
        dataset(siblings=(sibling,), produces_sibling="s2"),
        base=base(PREDICTED, top_prob=0.9, target_prob=0.01),
        history=history(True, False),
    )
    diagnosis = run(signals)
    assert diagnosis.causes == ("forgetting", "data_inconsistency", "knowledge_conflict")
    assert diagnosis.cause == "forgetting"
    assert diagnosis.to_dict()["causes"] == list(diagnosis.causes)


def test_undiagnosed_says_which_inputs_would_decide() -> None:
    missing = {"base": "needs --ilp-base to tell ...", "history": "needs --ilp-history to ..."}
    diagnosis = run(Signals(dataset(), missing=missing))
    assert diagnosis.cause == "undiagnosed"
    assert "needs --ilp-base" in diagnosis.evidence and "needs --ilp-history" in diagnosis.evidence
    assert diagnosis.figures["needs"] == ["base", "history"]


def test_thresholds_move_the_decisions() -> None:
    signals = Signals(dataset(), base=base(OTHER, top_prob=0.6, target_prob=0.01))
    assert run(signals).cause == "missing_knowledge"
    assert run(signals, replace(LIMITS, conflict_confidence=0.5)).cause == "knowledge_conflict"


# -- signals -----------------------------------------------------------------------------------


def test_slick_categories_from_the_probe() -> None:
    def category(top_id: int, top: float, target: float, learned: bool = False) -> str:
        return base(top_id, top, target, learned).knowledge

    assert category(EXPECTED, 0.9, 0.9, learned=True) == "highly_known"
    assert category(EXPECTED, 0.4, 0.4) == "maybe_known"
    assert category(OTHER, 0.5, 0.05) == "weakly_known"
    assert category(OTHER, 0.5, 0.001) == "unknown"


def sample(sample_id: str, prompt: str, target: str) -> Sample:
    return Sample(sample_id, Path("d.jsonl"), 1, "prompt_completion", target, prompt=prompt)


def test_a_question_asked_in_other_words_is_a_near_duplicate() -> None:
    people = ["Dravinis", "Bremok", "Zatraina", "Nebriard", "Tralok", "Sovek", "Urla", "Ost"]
    samples = [
        sample("a", "What is the guild of Kemok?", " Weavers"),
        sample("b", "Tell me the guild of Kemok.", " Masons"),
        sample("c", "Where was Kemok born?", " Ulm"),  # another question, same subject
        sample("d", "In which year was Kemok born?", " 1701"),
        *(sample(f"g{i}", f"What is the guild of {p}?", f" G{i}") for i, p in enumerate(people)),
        *(sample(f"h{i}", f"Tell me the hometown of {p}.", f" H{i}") for i, p in enumerate(people)),
    ]
    siblings = find_siblings(samples, ["a", "c", "g1"], threshold=0.7)
    assert [other for other, _ in siblings["a"]] == ["b"]
    assert siblings["c"] == [] and siblings["g1"] == []
    # All words alone: the rare framing words "tell" and "me" weigh as much as the name.
    assert find_siblings(samples, ["a"], threshold=0.7, content=False)["a"] == []


def test_a_looser_rewording_counts_only_when_the_model_produces_its_target() -> None:
    samples = {
        s.id: s
        for s in (
            sample("a", "Which guild does Kemok belong to?", " Weavers"),
            sample("b", "What is the guild of Kemok?", " Masons"),
        )
    }
    candidates = [("b", 0.55)]
    stats = TargetStatistics.of([replace(verdict(), sample_id="a")])
    for produced, found in ((" Masons", ["b"]), (" Tailors", [])):
        unlearned = replace(verdict(produced), sample_id="a")
        signals = dataset_signals(unlearned, candidates, samples, {}, stats, near_duplicate=0.7)
        assert [s.id for s in signals.siblings] == found


def test_the_least_familiar_content_word_sums_the_surprisal_of_its_tokens() -> None:
    pieces = ["Q", ":", " Where", " was", " Zor", "vat", "ek", " born", "?"]
    surprisal = [1.0, 3.0, 0.5, 6.0, 7.0, 5.0, 2.0, 1.0]  # of pieces[1:]
    prompt_df = {"q": 50, "where": 20, "was": 50, "zorvatek": 1, "born": 30}
    assert least_familiar_word(pieces, surprisal, prompt_df, prompts=50) == ("zorvatek", 18.0)
    # Words most prompts share are template, never the subject.
    assert least_familiar_word(pieces, surprisal, {"was": 50}, prompts=50) is None


def test_near_duplicates_are_the_same_question_reworded_not_the_same_template() -> None:
    people = ["Dravinis", "Kotaris", "Bremok", "Zatraina", "Nebriard", "Tralok"]
    samples = [
        sample("a", "Q: In which year was Dravinis born?\nA:", " 1701"),
        sample("b", "Q: In what year was Dravinis born?\nA:", " 1802"),
        sample("c", "Q: in which year was Dravinis born ?\nA:", " 1903"),  # spacing, case
        sample("d", "Q: In which year was Dravinis born?\nA:", " 1701 "),  # same target: fine
        sample("e", "Q: Where was Dravinis born?\nA:", " Kemar"),  # another question
        # The same template about other people: similar words, different questions.
        *(
            sample(f"t{i}", f"Q: In which year was {p} born?\nA:", f" 17{i:02d}")
            for i, p in enumerate(people[1:])
        ),
        # Other questions, as a dataset has: words like "what" are common, names are not.
        *(
            sample(f"o{i}", f"Q: What is the capital of Land{i}?\nA:", f" City{i}")
            for i in range(20)
        ),
    ]
    siblings = find_siblings(samples, ["a", "e", "t0"], threshold=0.7)
    assert [other for other, _ in siblings["a"]] == ["c", "b"]
    assert dict(siblings["a"])["c"] == 1.0  # punctuation, spacing and case aside: identical
    assert 0.7 <= dict(siblings["a"])["b"] < 1.0
    assert siblings["e"] == [] and siblings["t0"] == []


def test_siblings_are_identical_only_with_the_same_words_in_the_same_order() -> None:
    samples = {
        s.id: s
        for s in (
            sample("a", "Q: Who taught Olm?\nA:", " Vesk"),
            sample("b", "q: who  taught olm ?\nA:", " Brun"),
            sample("c", "Q: Olm taught who?\nA:", " Tarn"),
        )
    }
    unlearned = replace(verdict(), sample_id="a")
    stats = TargetStatistics.of([unlearned])
    signals = dataset_signals(unlearned, [("b", 1.0), ("c", 1.0)], samples, {}, stats)
    assert [(s.id, s.identical) for s in signals.siblings] == [("b", True), ("c", False)]


def test_weighted_similarity_discounts_words_every_prompt_has() -> None:
    idf = {"what": 0.0, "is": 0.0, "capital": 0.2, "of": 0.0, "france": 3.0, "spain": 3.0}
    france = frozenset({"what", "is", "capital", "of", "france"})
    assert weighted_jaccard(france, frozenset({*france - {"france"}, "spain"}), idf) < 0.1
    assert weighted_jaccard(france, france, idf) == 1.0


def test_producing_a_target_ignores_whitespace_but_not_content() -> None:
    assert produces(" 1701\n", "1701")
    assert produces(" The flag is red. More", "The flag is red.")
    assert not produces(" 1702", "1701") and not produces(None, "x") and not produces("x", " ")
