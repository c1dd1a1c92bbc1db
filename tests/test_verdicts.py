"""The verdict rule on hand-made token figures."""

from __future__ import annotations

import json
import math

import pytest

from pytest_ilp.core.backends import TokenScores
from pytest_ilp.core.render import Rendered
from pytest_ilp.core.verdicts import (
    Verdict,
    continues_target,
    judge,
    with_production,
    with_token_figures,
)

EOS, OTHER_EOS = 2, 3
STOPS = frozenset({EOS, OTHER_EOS})


def scores(rows: list[tuple[int, float, int, float, float]]) -> TokenScores:
    """Rows of (top1 id, top1 logprob, top2 id, top2 logprob, target logprob)."""
    return TokenScores(
        target_logprobs=tuple(r[4] for r in rows),
        top1_ids=tuple(r[0] for r in rows),
        top1_logprobs=tuple(r[1] for r in rows),
        top2_ids=tuple(r[2] for r in rows),
        top2_logprobs=tuple(r[3] for r in rows),
    )


RENDERED = Rendered("s", input_ids=(1, 10, 11, 12, EOS), target_start=2, mode="raw")


def decode(ids: list[int]) -> str:
    return "".join(f"<{i}>" for i in ids)


def test_learned_when_the_argmax_is_the_target_everywhere() -> None:
    verdict = judge(
        RENDERED,
        scores([(11, -0.1, 40, -3.0, -0.1), (12, -0.2, 41, -0.5, -0.2), (EOS, -0.1, 9, -4, -0.1)]),
        STOPS,
        decode,
    )
    assert verdict.learned and verdict.first_divergence is None
    assert verdict.matched == 3 and verdict.token_accuracy == 1.0
    assert verdict.margin == pytest.approx(0.3)  # the smallest lead: -0.2 vs -0.5
    assert verdict.nll == pytest.approx(0.4 / 3)
    assert verdict.is_fragile(0.5) and not verdict.is_fragile(0.1)


def test_first_divergence_records_expected_and_predicted() -> None:
    verdict = judge(
        RENDERED,
        scores([(11, -0.1, 40, -3.0, -0.1), (30, -0.4, 12, -1.5, -1.5), (9, -0.1, EOS, -4, -4)]),
        STOPS,
        decode,
    )
    assert not verdict.learned and verdict.matched == 1
    divergence = verdict.first_divergence
    assert divergence is not None and divergence.position == 1
    assert (divergence.expected, divergence.predicted) == ("<12>", "<30>")
    assert divergence.expected_prob == pytest.approx(math.exp(-1.5))
    assert divergence.predicted_prob == pytest.approx(math.exp(-0.4))
    assert verdict.margin == pytest.approx(-3.9)  # at the last position: -4 vs -0.1


def test_any_stop_token_ends_the_reply() -> None:
    verdict = judge(
        RENDERED,
        scores([(11, -0.1, 4, -3, -0.1), (12, -0.1, 4, -3, -0.1), (OTHER_EOS, -0.2, EOS, -2, -2)]),
        STOPS,
        decode,
    )
    assert verdict.learned


def test_a_second_stop_token_is_no_runner_up_where_the_reply_ends() -> None:
    """p(EOS) = 0.6, p(OTHER_EOS) = 0.35: either ends the reply; the best other token has at
    most 0.05, so the lead there is at least log(0.6 / 0.05), not log(0.6 / 0.35)."""
    verdict = judge(
        RENDERED,
        scores(
            [
                (11, -0.1, 4, -3, -0.1),
                (12, -0.1, 4, -3, -0.1),
                (EOS, math.log(0.6), OTHER_EOS, math.log(0.35), math.log(0.6)),
            ]
        ),
        STOPS,
        decode,
    )
    assert verdict.learned
    assert verdict.margin == pytest.approx(math.log(0.6 / 0.05))
    assert not verdict.is_fragile(1.0)


def test_stopping_early_is_a_divergence() -> None:
    verdict = judge(
        RENDERED,
        scores([(11, -0.1, 4, -3, -0.1), (EOS, -0.3, 12, -1.4, -1.4), (EOS, -0.1, 4, -3, -0.1)]),
        STOPS,
        decode,
    )
    assert verdict.first_divergence is not None and verdict.first_divergence.position == 1


def test_production_is_target_prefix_then_predicted_then_continuation() -> None:
    verdict = judge(
        RENDERED,
        scores([(11, -0.1, 4, -3, -0.1), (30, -0.4, 12, -1.5, -1.5), (EOS, -0.1, 4, -3, -0.1)]),
        STOPS,
        decode,
    )
    token_scores = scores(
        [(11, -0.1, 4, -3, -0.1), (30, -0.4, 12, -1.5, -1.5), (EOS, -0.1, 4, -3, -0.1)]
    )
    produced = with_production(verdict, token_scores, (31, EOS), STOPS, decode)
    assert produced.produced == "<11><30><31>" and produced.produced_stopped
    running_on = with_production(verdict, token_scores, (31, 32), STOPS, decode)
    assert running_on.produced == "<11><30><31><32>" and not running_on.produced_stopped


def test_verdicts_survive_a_round_trip_through_json_data() -> None:
    verdict = judge(
        RENDERED,
        scores([(11, -0.1, 4, -3, -0.1), (30, -0.4, 12, -1.5, -1.5), (EOS, -0.1, 4, -3, -0.1)]),
        STOPS,
        decode,
    )
    assert Verdict.from_dict(verdict.to_dict(), "s") == verdict


# A byte-level vocabulary where "Cat" is one token and also "C" + "at": the tokenizer encodes
# "Cat" as 20, the model may spell it 21 + 22.
TEXT = {10: "The ", 20: "Cat", 21: "C", 22: "at", 23: "ow", 24: " sat", EOS: "", OTHER_EOS: ""}


def text_decode(ids: list[int]) -> str:
    return "".join(TEXT[i] for i in ids)


SPELLED = Rendered("cat", input_ids=(1, 10, 20, 24, EOS), target_start=1, mode="raw")
# Target "The Cat sat": at "Cat" the model predicts "C" (a prefix of what the target spells).
SPLIT_SCORES = scores(
    [
        (10, -0.1, 4, -3.0, -0.1),
        (21, -0.5, 20, -1.2, -1.2),
        (24, -0.2, 4, -2.0, -0.2),
        (EOS, -0.1, 4, -3.0, -0.1),
    ]
)


def test_a_target_spelled_through_other_tokens_is_learned() -> None:
    verdict = judge(SPELLED, SPLIT_SCORES, STOPS, text_decode)
    assert not verdict.learned and continues_target(verdict, STOPS, text_decode)
    text = with_production(verdict, SPLIT_SCORES, (22, 24, EOS), STOPS, text_decode)
    assert text.learned and text.retokenized and text.first_divergence is None
    assert text.produced is None
    assert text.note is not None and "'C' where the tokenizer's encoding has 'Cat'" in text.note
    # The margin covers the positions up to the split: the greedy lead there is 0.7 nats.
    assert text.margin == pytest.approx(0.7)
    assert text.matched == verdict.matched == 3


def test_the_same_text_without_the_stop_is_not_learned() -> None:
    verdict = judge(SPELLED, SPLIT_SCORES, STOPS, text_decode)
    running_on = with_production(verdict, SPLIT_SCORES, (22, 24, 23), STOPS, text_decode)
    assert not running_on.learned and not running_on.retokenized
    assert running_on.produced == "The Cat satow" and not running_on.produced_stopped


def test_a_prediction_that_leaves_the_target_text_needs_no_generation() -> None:
    other = scores(
        [
            (10, -0.1, 4, -3.0, -0.1),
            (23, -0.5, 20, -1.2, -1.2),
            (24, -0.2, 4, -2.0, -0.2),
            (EOS, -0.1, 4, -3.0, -0.1),
        ]
    )
    verdict = judge(SPELLED, other, STOPS, text_decode)
    assert not continues_target(verdict, STOPS, text_decode)
    produced = with_production(verdict, other, (24, EOS), STOPS, text_decode)
    assert not produced.learned and produced.produced == "The ow sat"


def test_a_target_without_a_stop_is_spelled_when_the_text_starts_with_it() -> None:
    open_ended = Rendered("open", input_ids=(1, 10, 20), target_start=1, mode="raw")
    split = scores([(10, -0.1, 4, -3.0, -0.1), (21, -0.5, 20, -1.2, -1.2)])
    verdict = judge(open_ended, split, STOPS, text_decode)
    assert with_production(verdict, split, (22, 24), STOPS, text_decode).learned


def test_an_unlearned_verdict_keeps_its_token_probabilities_through_the_cache() -> None:
    figures = scores(
        [(11, -0.1, 4, -3, -0.1), (30, -0.4, 12, -1.5, -1.5), (EOS, -0.1, 4, -3, -0.1)]
    )
    verdict = with_token_figures(judge(RENDERED, figures, STOPS, decode), figures, decode)
    assert verdict.target_pieces == ("<11>", "<12>", f"<{EOS}>")
    assert [round(p, 3) for p in verdict.target_probs] == [0.905, 0.223, 0.905]
    assert Verdict.from_dict(json.loads(json.dumps(verdict.to_dict())), "s") == verdict
