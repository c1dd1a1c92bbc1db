"""From per-position token figures to a `Verdict`: learned or not, where it diverged, how surely.

The rule (see DESIGN.md, "the key performance idea"): greedy decoding from the prompt yields
exactly `target + EOS` iff, in one teacher-forced pass over `prompt + target + EOS`, the argmax
at every target position is the next target token. At a position whose target is a stop token,
any stop token counts (generation ends on either), so a model that ends with another of its EOS
ids still reproduces the sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from pytest_ilp.backends import TokenScores
from pytest_ilp.render import Rendered


@dataclass(frozen=True)
class Divergence:
    """The first target position where greedy decoding leaves the target."""

    #: 0-based index into the target tokens.
    position: int
    expected: str
    predicted: str
    expected_id: int
    predicted_id: int
    expected_prob: float
    predicted_prob: float


@dataclass(frozen=True)
class Verdict:
    """Whether a checkpoint reproduces one sample, with the figures behind the answer.

    `nll` is the mean negative log-likelihood of the target tokens (nats per token). `margin` is
    the smallest lead, over target positions, of the greedy token over the runner-up (in nats):
    positive when learned, and then a small value means fragile (a near-tie that another dtype,
    batch shape or device may flip); negative when not learned. `produced` is what greedy
    decoding from the prompt actually gives (only for unlearned samples), without its stop token.

    For an unlearned sample, `target_probs` holds the probability the model gave each target
    token (teacher-forced) and `target_pieces` the text of each token (what the HTML report
    shades); both stay empty for learned samples, to keep caches and reports small.
    """

    sample_id: str
    learned: bool
    target_ids: tuple[int, ...]
    matched: int
    first_divergence: Divergence | None
    nll: float
    margin: float
    produced: str | None = None
    #: whether `produced` ended in a stop token within the generation budget.
    produced_stopped: bool = False
    note: str | None = None
    target_probs: tuple[float, ...] = ()
    #: the target's text split at its token boundaries (a character that spans several tokens
    #: belongs to the token that completes it, so the pieces join to the decoded target).
    target_pieces: tuple[str, ...] = ()

    @property
    def target_tokens(self) -> int:
        return len(self.target_ids)

    @property
    def token_accuracy(self) -> float:
        return self.matched / len(self.target_ids)

    def is_fragile(self, threshold: float) -> bool:
        return self.learned and self.margin < threshold

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["sample_id"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], sample_id: str) -> Verdict:
        divergence = data.get("first_divergence")
        return cls(
            **{
                **data,
                "sample_id": sample_id,
                "target_ids": tuple(data["target_ids"]),
                "target_probs": tuple(data.get("target_probs") or ()),
                "target_pieces": tuple(data.get("target_pieces") or ()),
                "first_divergence": Divergence(**divergence) if divergence else None,
            }
        )


def judge(
    rendered: Rendered,
    scores: TokenScores,
    stop_ids: frozenset[int],
    decode: Callable[[list[int]], str],
) -> Verdict:
    """The verdict of one teacher-forced pass (`produced` is filled in later, if unlearned)."""
    target = rendered.target_ids
    matched = 0
    margin = math.inf
    divergence: Divergence | None = None
    for t, expected in enumerate(target):
        top1 = scores.top1_ids[t]
        hit = top1 == expected or (expected in stop_ids and top1 in stop_ids)
        if hit:
            matched += 1
            lead = scores.top1_logprobs[t] - _runner_up(scores, t, expected, stop_ids)
        else:
            lead = scores.target_logprobs[t] - scores.top1_logprobs[t]
            if divergence is None:
                divergence = Divergence(
                    position=t,
                    expected=decode([expected]),
                    predicted=decode([top1]),
                    expected_id=expected,
                    predicted_id=top1,
                    expected_prob=math.exp(scores.target_logprobs[t]),
                    predicted_prob=math.exp(scores.top1_logprobs[t]),
                )
        margin = min(margin, lead)
    nll = -sum(scores.target_logprobs) / len(target)
    return Verdict(
        sample_id=rendered.sample_id,
        learned=divergence is None,
        target_ids=target,
        matched=matched,
        first_divergence=divergence,
        nll=nll,
        margin=margin,
        note=rendered.note,
        target_probs=()
        if divergence is None
        else tuple(math.exp(lp) for lp in scores.target_logprobs),
    )


def _runner_up(scores: TokenScores, t: int, expected: int, stop_ids: frozenset[int]) -> float:
    """Log-probability of the best token that would change the output at target position t.

    Where the reply should end and the runner-up is another stop token, that token ends it
    too: the competitor is the best non-stop token, whose probability is at most the runner-up's
    and at most what the two stop tokens leave, 1 - p1 - p2 (a sound bound from the top two).
    """
    top2 = scores.top2_logprobs[t]
    if expected not in stop_ids or scores.top2_ids[t] not in stop_ids:
        return top2
    left = 1.0 - math.exp(scores.top1_logprobs[t]) - math.exp(top2)
    return min(top2, math.log(left)) if left > 0 else -math.inf


def with_production(
    verdict: Verdict,
    generated: tuple[int, ...],
    stop_ids: frozenset[int],
    decode: Callable[[list[int]], str],
) -> Verdict:
    """Attach the greedy output: the target up to the divergence, the token predicted there,
    then what the model generated after it."""
    divergence = verdict.first_divergence
    assert divergence is not None
    tokens = [*verdict.target_ids[: divergence.position], divergence.predicted_id, *generated]
    stopped = bool(tokens) and tokens[-1] in stop_ids
    if stopped:
        tokens = tokens[:-1]
    return replace(
        verdict,
        produced=decode(tokens),
        produced_stopped=stopped,
        target_pieces=token_pieces(verdict.target_ids, decode),
    )


def token_pieces(ids: tuple[int, ...], decode: Callable[[list[int]], str]) -> tuple[str, ...]:
    """The text each token adds to the target (the pieces join to the decoded target).

    Decoding token by token would show half a character as U+FFFD wherever a byte-level BPE
    splits one (a CJK character, an emoji), and would lose SentencePiece's leading spaces. So
    each token is decoded after the token before it (text-generation-inference's incremental
    detokenizer): a character split over tokens goes to the token that completes it.
    """
    pieces = []
    prefix, read = 0, 0
    for end in range(1, len(ids) + 1):
        before = decode(list(ids[prefix:read]))
        text = decode(list(ids[prefix:end]))
        if len(text) > len(before) and (not text.endswith("\ufffd") or end == len(ids)):
            pieces.append(text[len(before) :])
            prefix, read = read, end
        else:
            pieces.append("")  # an incomplete character: a later token completes it
    return tuple(pieces)
