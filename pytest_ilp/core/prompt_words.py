"""What a prompt's words say: its words in order and as a set, its content words (function
words aside), and how familiar each word is to the base model (`signals.Familiarity`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from pytest_ilp.core.answers import FUNCTION_WORDS
from pytest_ilp.core.samples import Sample


def prompt_word_sequence(sample: Sample) -> tuple[str, ...]:
    """The prompt's words in order, lower-cased, punctuation and spacing aside (chat turns
    joined): two prompts with the same sequence are the same question."""
    if sample.messages is not None:
        text = "\n".join(str(m.get("content", "")) for m in sample.messages)
    else:
        text = sample.prompt or ""
    return tuple(re.findall(r"\w+", text.lower()))


def prompt_words(sample: Sample) -> frozenset[str]:
    """The prompt's words as a set (what near-duplicate similarity compares)."""
    return frozenset(prompt_word_sequence(sample))


def content_words(words: frozenset[str]) -> frozenset[str]:
    """The words of a prompt that say what it asks, function words aside."""
    return frozenset(w for w in words if w not in FUNCTION_WORDS) or words


#: a word in more than this share of the prompts is template, not content (familiarity).
TEMPLATE_SHARE = 0.1


def word_surprisal(pieces: Sequence[str], surprisal: Sequence[float]) -> list[tuple[str, float]]:
    """The prompt's words (lower-cased) with the surprisal of the tokens that spell them.

    `surprisal[i]` is that of `pieces[i + 1]`; a word that touches the first token, which has
    no surprisal, is left out.
    """
    text, spans = "", []
    for piece in pieces:
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    words = []
    for match in re.finditer(r"\w+", text):
        start, end = match.span()
        tokens = [i for i, (a, b) in enumerate(spans) if a < end and b > start]
        if not tokens or tokens[0] == 0:
            continue
        words.append((match.group().lower(), sum(surprisal[i - 1] for i in tokens)))
    return words


def _template_limit(prompts: int) -> float:
    """A word in more prompts than this is template; in fewer (at least one), content."""
    return max(2.0, TEMPLATE_SHARE * prompts)


def least_familiar_word(
    pieces: Sequence[str], surprisal: Sequence[float], prompt_df: Mapping[str, int], prompts: int
) -> tuple[str, float] | None:
    """The content word of the prompt that surprises the model most, with its surprisal."""
    limit = _template_limit(prompts)
    content = [
        (word, nats)
        for word, nats in word_surprisal(pieces, surprisal)
        if 0 < prompt_df.get(word, 0) <= limit
    ]
    return max(content, key=lambda pair: pair[1]) if content else None


def prompt_document_frequency(samples: Iterable[Sample]) -> Counter[str]:
    """In how many prompts each word occurs."""
    return Counter(w for s in samples for w in prompt_words(s))


def question_template(
    sample: Sample, prompt_df: Mapping[str, int], prompts: int
) -> tuple[str, ...]:
    """The prompt's template words in order, its content words left out: "Where was Kemok
    born?" and "Where was Tralok born?" ask the same question about different subjects."""
    limit = _template_limit(prompts)
    return tuple(w for w in prompt_word_sequence(sample) if prompt_df.get(w, 0) > limit)
