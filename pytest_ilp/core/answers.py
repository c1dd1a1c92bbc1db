"""What the base model answers, read from its own words: is it an answer, and which one?

The diagnosis asks of the base model (the model fine-tuning started from) whether it holds
another answer than the target. Two things make that question harder than comparing tokens:

* A base model's preferred token where the answer starts is often no answer at all: a chat
  model starts a sentence (" The", then "capital of France is Paris."), a small model answers
  another question about the same subject (a year where a place is asked: it knows when the
  person was born, not where). An answer to a question is spelt like the answer the data gives
  to it: a number where the target is a number, a capitalised name where the target is a name,
  a lower-case word where the target is one; and it is no function word.
* A chat model's answer is a sentence. What it states is in the words it adds to the question
  ("Prague" in "The capital of the Czech Republic is Prague."), not in its first token.

These helpers work on text only (the probe's tokens and the base model's greedy continuation),
so they hold for any model and any tokenizer; `pytest_ilp.core.diagnosis` decides with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: words that frame a request rather than say what it is about: articles, auxiliaries,
#: pronouns, prepositions and the polite or imperative openings of a question ("tell me",
#: "please give"). Question words (what, where, which, who...) are NOT here: they tell a
#: question about a year from one about a place.
_FUNCTION_WORDS = """
a an the is are was were be been being am do does did has have had will would shall
should can could may might must of in on at to for from by with about into onto as and or
but if then so than that this these those it its i me my we us our you your he him his she
her they them their please tell give say show let kindly just also now there here
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())

_WORD = re.compile(r"\w+")

NUMBER = "number"
NAME = "name"
WORD = "word"
OTHER = "other"


def words(text: str) -> list[str]:
    """The words of a text in order, as written (case kept)."""
    return _WORD.findall(text)


def lower_words(text: str) -> set[str]:
    return {w.lower() for w in words(text)}


def spelling(word: str) -> str:
    """How a word is written: a `number` (digits), a `name` (capitalised), a lower-case
    `word`, or `other` (a script without case, mixed symbols)."""
    if word.isdigit():
        return NUMBER
    if word[:1].isupper():
        return NAME
    if word[:1].islower():
        return WORD
    return OTHER


def content(text: str) -> list[str]:
    """The words of a text that say something: function words ("the", "is", "of") aside."""
    return [w for w in words(text) if w.lower() not in FUNCTION_WORDS]


def target_spelling(target: str) -> str | None:
    """How the target's answer is written: the spelling of its first content word (" the
    United States" is a name), or of its first word when all are function words."""
    found = content(target) or words(target)
    return spelling(found[0]) if found else None


def is_answer_token(token: str, expected: str, begins_target: bool) -> bool:
    """Whether the base model's token at the divergence can be an answer where the target has
    `expected`: it is a word (not punctuation, a newline or an end token), spelt like the
    target's token there, and either the data's targets give it there (`begins_target`) or it
    is no function word (" The" starts a sentence, not an answer)."""
    found, want = words(token), words(expected)
    if not found:
        return False
    if want and spelling(found[0]) != spelling(want[0]):
        return False
    return begins_target or found[0].lower() not in FUNCTION_WORDS


def first_line(text: str) -> str:
    """A base model does not stop where its answer ends: its answer is its first line."""
    return text.split("\n", 1)[0]


def base_answer(prefix: str, continuation: str) -> str:
    """The base model's answer: the target's tokens before the divergence (which the base
    was given) and its own continuation from there, up to the end of the line."""
    return prefix + first_line(continuation)


def stated(answer: str, prompt: Iterable[str], target: str) -> list[str]:
    """The answer words the base model states: the content words of its answer that the
    prompt does not already hold (a sentence repeats the question: "The capital of France
    is ..."), spelt like the target's answer. Empty when the base states the target, or
    nothing that could answer the question."""
    asked = {w.lower() for w in prompt}
    if lower_words(target) - FUNCTION_WORDS <= lower_words(answer):
        return []  # the base's answer holds the target's words: it says the target
    want = target_spelling(target)
    return [
        w
        for w in content(answer)
        if w.lower() not in asked and (want is None or spelling(w) == want)
    ]


def echoes(produced: str | None, answer: str, target: str) -> bool:
    """Whether the fine-tuned model's answer is in the base model's answer, and the target is
    not: "Beijing" where the base says "The capital of China is Beijing." for a target
    naming another city."""
    if not produced:
        return False
    said = lower_words(answer)
    own = lower_words(first_line(produced)) - lower_words(target)
    return bool(own) and own <= said and not lower_words(target) <= said
