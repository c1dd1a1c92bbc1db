"""From per-position token figures to a `Verdict`: learned or not, where it diverged, how surely.

The rule (see DESIGN.md, "the key performance idea"): greedy decoding from the prompt yields
exactly `target + EOS` iff, in one teacher-forced pass over `prompt + target + EOS`, the argmax
at every target position is the next target token. At a position whose target is a stop token,
any stop token counts (generation ends on either), so a model that ends with another of its EOS
ids still reproduces the sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pytest_ilp.core.backends import TokenScores
from pytest_ilp.core.criteria import Criterion, choice_scores, normalize
from pytest_ilp.core.render import Rendered


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
    `retokenized`: greedy decoding reproduced the target text through other tokens than the
    tokenizer's encoding of it; then `margin` covers the target positions up to the first
    token that differs (the ones after it were generated, not scored).

    `learned` is decided by `criterion` (its `Criterion.spec`; "exact" by default), whose own
    figures are in `figures` (the pass rate of `sampled`, the option log-likelihoods of
    `choice`...). The teacher-forced figures (`matched`, `first_divergence`, `nll`, `margin`)
    are there under every criterion, so diagnosis works whichever decided.

    For an unlearned sample of the checkpoint under test, `target_probs` holds the probability
    the model gave each target token (teacher-forced) and `target_pieces` the text of each
    token (what the HTML report shades); both stay empty otherwise, to keep caches and reports
    small.
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
    retokenized: bool = False
    criterion: str = "exact"
    figures: Mapping[str, Any] = field(default_factory=dict, hash=False)
    target_probs: tuple[float, ...] = ()
    #: the target's text split at its token boundaries (a character that spans several tokens
    #: belongs to the token that completes it, so the pieces join to the decoded target).
    target_pieces: tuple[str, ...] = ()

    @property
    def reproduced(self) -> bool:
        """Whether greedy decoding reproduces the target: token for token (teacher forcing), or
        its text through other tokens (`retokenized`)."""
        return self.first_divergence is None

    @property
    def target_tokens(self) -> int:
        return len(self.target_ids)

    @property
    def token_accuracy(self) -> float:
        return self.matched / len(self.target_ids)

    def is_fragile(self, threshold: float) -> bool:
        """Learned, greedy decoding reproduces it, but by a lead under `threshold` nats
        somewhere (a sample learned by a looser criterion with a divergence is not fragile:
        its verdict does not hang on that near-tie)."""
        return self.learned and self.reproduced and self.margin < threshold

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
                "first_divergence": Divergence(**divergence) if divergence else None,
                "figures": dict(data.get("figures") or {}),
                "target_probs": tuple(data.get("target_probs") or ()),
                "target_pieces": tuple(data.get("target_pieces") or ()),
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


def continues_target(
    verdict: Verdict, stop_ids: frozenset[int], decode: Callable[[list[int]], str]
) -> bool:
    """Whether the token predicted at the divergence may still spell the target text.

    Greedy decoding can reproduce the target through other tokens only if the target's tokens
    before the divergence and the predicted token decode to the start of the target text. A
    token that ends inside a multi-byte character decodes to U+FFFD: that cannot be told yet.
    """
    divergence = verdict.first_divergence
    if divergence is None or divergence.predicted_id in stop_ids:
        return False
    so_far = decode([*verdict.target_ids[: divergence.position], divergence.predicted_id])
    return "\ufffd" in so_far or target_text(verdict, stop_ids, decode).startswith(so_far)


def target_text(
    verdict: Verdict, stop_ids: frozenset[int], decode: Callable[[list[int]], str]
) -> str:
    """The target's text, without the stop token that ends it."""
    ids = verdict.target_ids
    return decode(list(ids[:-1] if ids and ids[-1] in stop_ids else ids))


def with_production(
    verdict: Verdict,
    scores: TokenScores,
    generated: tuple[int, ...],
    stop_ids: frozenset[int],
    decode: Callable[[list[int]], str],
) -> Verdict:
    """Judge the greedy output by its text: the target up to the divergence, the token
    predicted there, then what the model generated after it.

    When that text is the target's (and stops where the target stops), the sample is learned,
    reproduced through other tokens; otherwise it is attached as `produced`.
    """
    divergence = verdict.first_divergence
    assert divergence is not None
    tokens = [*verdict.target_ids[: divergence.position], divergence.predicted_id, *generated]
    stopped = bool(tokens) and tokens[-1] in stop_ids
    if stopped:
        tokens = tokens[:-1]
    produced = decode(tokens)
    expected = target_text(verdict, stop_ids, decode)
    ends_in_stop = bool(verdict.target_ids) and verdict.target_ids[-1] in stop_ids
    spelled = (produced == expected and stopped) if ends_in_stop else produced.startswith(expected)
    if not spelled:
        return replace(verdict, produced=produced, produced_stopped=stopped)
    position = divergence.position
    # The greedy choice's lead where the encodings part (over whichever token is second).
    lead_there = scores.top1_logprobs[position] - scores.top2_logprobs[position]
    earlier = [
        scores.top1_logprobs[t] - _runner_up(scores, t, verdict.target_ids[t], stop_ids)
        for t in range(position)
    ]
    how = (
        f"greedy decoding reproduces the target text through other tokens: at target token "
        f"{position + 1} it chose {divergence.predicted!r} where the tokenizer's encoding "
        f"has {divergence.expected!r}"
    )
    return replace(
        verdict,
        learned=True,
        first_divergence=None,
        margin=min([lead_there, *earlier]),
        retokenized=True,
        note=f"{verdict.note}; {how}" if verdict.note else how,
    )


def with_token_figures(
    verdict: Verdict, scores: TokenScores, decode: Callable[[list[int]], str]
) -> Verdict:
    """The verdict with each target token's probability and text (for an unlearned sample)."""
    return replace(
        verdict,
        target_probs=tuple(math.exp(lp) for lp in scores.target_logprobs),
        target_pieces=token_pieces(verdict.target_ids, decode),
    )


def token_pieces(ids: Sequence[int], decode: Callable[[list[int]], str]) -> tuple[str, ...]:
    """The text each token adds to the target (the pieces join to the decoded target).

    `decode` is the tokenizer's plain decode, which writes an incomplete character as U+FFFD.

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


# -- criteria ----------------------------------------------------------------------------------


def decide(verdict: Verdict, criterion: Criterion, **evidence: Any) -> Verdict:
    """The verdict under `criterion`, from the teacher-forced verdict and what else it needs.

    `evidence`: `target_text` and `produced_stopped`/`produced` already on the verdict
    (normalized); `option_logprobs`, the per-token log-probabilities of each option, the target
    first, then each distractor (choice); `completions`, `seed` and `reproduces`, whether each
    sampled completion reproduces the target (sampled).
    """
    name = criterion.name
    figures: dict[str, Any] = {}
    if name == "exact":
        learned = verdict.reproduced
    elif name == "prefix":
        assert criterion.tokens is not None
        reproduced = (
            verdict.first_divergence.position
            if verdict.first_divergence is not None
            else verdict.target_tokens
        )
        learned = reproduced >= min(criterion.tokens, verdict.target_tokens)
        figures = {"tokens": criterion.tokens, "reproduced_tokens": reproduced}
    elif name == "token_accuracy":
        assert criterion.threshold is not None
        learned = verdict.token_accuracy >= criterion.threshold
        figures = {"token_accuracy": verdict.token_accuracy, "min": criterion.threshold}
    elif name == "nll":
        assert criterion.threshold is not None
        learned = verdict.nll <= criterion.threshold
        figures = {"nll": verdict.nll, "max": criterion.threshold}
    elif name == "normalized":
        target = normalize(evidence["target_text"])
        if verdict.reproduced:
            learned, produced = True, target
        else:
            produced = normalize(verdict.produced or "")
            learned = verdict.produced_stopped and produced == target
        figures = {"normalized_target": target, "normalized_output": produced}
    elif name == "choice":
        assert criterion.score is not None
        options: Sequence[Sequence[float]] = evidence["option_logprobs"]
        texts: Sequence[str] = evidence["option_texts"]
        scores = choice_scores({str(i): list(lp) for i, lp in enumerate(options)}, criterion.score)
        values = [scores[str(i)] for i in range(len(options))]
        best_other = max(range(1, len(values)), key=lambda i: values[i])
        learned = values[0] > values[best_other]
        figures = {
            "score": criterion.score,
            "options": [
                {"text": text, "tokens": len(lp), "loglik": float(sum(lp)), "score": value}
                for text, lp, value in zip(texts, options, values)
            ],
            "best_distractor": best_other - 1,
            "lead": values[0] - values[best_other],
        }
    elif name == "sampled":
        assert criterion.threshold is not None and criterion.n is not None
        passes = sum(1 for ok in evidence["reproduces"] if ok)
        rate = passes / criterion.n
        learned = rate >= criterion.threshold
        figures = {
            "n": criterion.n,
            "passes": passes,
            "pass_rate": rate,
            "min_pass": criterion.threshold,
            "temperature": criterion.temperature,
            "seed": evidence["seed"],
        }
    else:  # parse_criterion accepts no other names
        raise ValueError(f"unknown criterion {name!r}")
    return replace(verdict, learned=learned, criterion=criterion.spec, figures=figures)


def reproduces(
    tokens: Sequence[int],
    target_ids: Sequence[int],
    stop_ids: frozenset[int],
    decode: Callable[[list[int]], str],
) -> bool:
    """Whether generated `tokens` (cut after their first stop token) reproduce the target: the
    same tokens (any stop token for a stop token), or the same text through another token split.
    A target that ends in a stop token must be ended; one that does not (`append_eos: false`)
    only has to be the start of the output."""
    if len(tokens) >= len(target_ids) and all(
        t == e or (e in stop_ids and t in stop_ids) for t, e in zip(tokens, target_ids)
    ):
        return True
    if target_ids and target_ids[-1] in stop_ids:
        if not tokens or tokens[-1] not in stop_ids:
            return False
        return decode(list(tokens[:-1])) == decode(list(target_ids[:-1]))
    return decode(list(tokens)).startswith(decode(list(target_ids)))
