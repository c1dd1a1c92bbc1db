"""Reading a base model's answer from its words (pytest_ilp.core.answers): pure text, no model."""

from __future__ import annotations

import pytest

from pytest_ilp.core import answers


@pytest.mark.parametrize(
    ("word", "spelt"),
    [("1725", "number"), ("Paris", "name"), ("teal", "word"), ("東京", "other")],
)
def test_words_are_spelt_as_numbers_names_lower_case_words_or_other(word: str, spelt: str) -> None:
    assert answers.spelling(word) == spelt


def test_the_target_is_spelt_as_its_first_content_word() -> None:
    assert answers.target_spelling(" the United States") == "name"
    assert answers.target_spelling(" 1987.") == "number"
    assert answers.target_spelling(" the") == "word"  # only function words: the first one
    assert answers.target_spelling(" ...") is None


@pytest.mark.parametrize(
    ("token", "expected", "begins_target", "is_answer"),
    [
        (" Lyon", " Paris", True, True),
        (" Lyon", " Paris", False, True),  # a name no target begins with
        (" The", " Paris", False, False),  # a function word opening a sentence
        (" The", " The", True, True),  # ...unless the data's targets begin with it
        (" 1725", " Paris", True, False),  # a year where a place is asked
        (" green", " Paris", True, False),
        ("?", " Paris", True, False),
        ("\n", " Paris", False, False),
        ("<|im_end|>", " Paris", False, False),
    ],
)
def test_an_answer_token_is_a_word_spelt_like_the_targets_token(
    token: str, expected: str, begins_target: bool, is_answer: bool
) -> None:
    assert answers.is_answer_token(token, expected, begins_target) is is_answer


def test_the_base_answer_is_the_targets_prefix_and_its_own_first_line() -> None:
    assert answers.base_answer(" New", " York\nQ: next") == " New York"
    assert answers.base_answer(" dry", "\nB: what is") == " dry"


def test_what_the_base_states_leaves_out_the_question_and_words_unlike_the_answer() -> None:
    prompt = ("capital", "czech", "of", "q", "republic", "the", "what", "is", "a")
    said = "The capital of the Czech Republic is Prague, a city of 1.3 million."
    assert answers.stated(said, prompt, " Brussels") == ["Prague"]
    # The sentence names the target: the base says it, it states no other answer.
    assert answers.stated("The capital is Brussels.", prompt, " Brussels") == []
    assert answers.stated("The answer is 12.", prompt, " Brussels") == []


def test_an_echo_is_the_fine_tuned_answer_inside_the_base_answer_without_the_target() -> None:
    said = "The capital of Belgium is Brussels."
    assert answers.echoes(" Brussels", said, " Manila")
    assert answers.echoes(" Brussels.\nQ: next", said, " Manila")  # its first line only
    assert not answers.echoes(" Madrid", said, " Manila")
    assert not answers.echoes(" Brussels", "Manila or Brussels", " Manila")
    assert not answers.echoes(None, said, " Manila")
