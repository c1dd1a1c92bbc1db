"""The backend requests of a scoring pass beyond the teacher-forced one, and what the pass's
figures give each criterion: a choice sample's distractors, a sampled sample's draws, the
continuations generated at a divergence, the probe of an earlier checkpoint."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_ilp.core.backends import GenerateRequest, SampleRequest, TokenScores
from pytest_ilp.core.cache import stable_hash
from pytest_ilp.core.criteria import Criterion
from pytest_ilp.core.render import Rendered, render_samples
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring.job import GENERATE_PAST_TARGET, Job, Probe, ScoringSettings
from pytest_ilp.core.scoring.tokenizer import vocabulary_problem
from pytest_ilp.core.verdicts import reproduces


def sample_seed(seed: int, sample: Sample) -> int:
    """The seed of one sample's draws under `sampled`: the criterion's seed and the sample's
    content, hashed. It does not depend on the other samples, their order or the batch."""
    return int(stable_hash({"seed": seed, "sample": sample.content_key()}, length=8), 16) % 2**31


def render_options(
    choice: Sequence[Sample],
    tokenizer: Any,
    settings: ScoringSettings,
    stop_ids: frozenset[int],
    job: Job,
    entries: dict[str, dict[str, Any]],
) -> dict[str, list[Rendered]]:
    """Each choice sample's distractors, rendered as targets of its prompt; a distractor that
    cannot be rendered makes its sample a problem (in `entries`) that says which."""
    wrong = [replace(s, target=d) for s in choice for d in s.distractors]
    rendered = iter(
        render_samples(wrong, tokenizer, settings.render, stop_ids, job.checkpoint.max_length)
    )
    options: dict[str, list[Rendered]] = {}
    for sample in choice:
        own = [next(rendered) for _ in sample.distractors]
        for number, option in enumerate(own, start=1):
            problem = option if isinstance(option, str) else vocabulary_problem(option, job)
            if problem is not None:
                entries[sample.id] = {"problem": f"distractor {number}: {problem}"}
                break
        else:
            options[sample.id] = [o for o in own if isinstance(o, Rendered)]
    return options


def sampled_completions(
    ready: Sequence[Rendered],
    by_id: Mapping[str, Sample],
    job: Job,
    backend: Any,
    stop_ids: frozenset[int],
) -> dict[str, tuple[int, list[tuple[int, ...]]]]:
    """The seed and completions of each sample judged by `sampled`, by id."""
    chosen = [r for r in ready if job.criterion_of(r.sample_id).name == "sampled"]
    if not chosen:
        return {}
    requests = []
    for r in chosen:
        criterion = job.criterion_of(r.sample_id)
        assert criterion.n is not None and criterion.temperature is not None
        requests.append(
            SampleRequest(
                input_ids=r.prompt_ids,
                n=criterion.n,
                temperature=criterion.temperature,
                seed=sample_seed(criterion.seed or 0, by_id[r.sample_id]),
                max_new_tokens=len(r.target_ids) + GENERATE_PAST_TARGET,
                stop_ids=stop_ids,
            )
        )
    drawn = backend.sample(requests)
    return {
        r.sample_id: (request.seed, completions)
        for r, request, completions in zip(chosen, requests, drawn)
    }


def criterion_evidence(
    rendered: Rendered,
    scores: TokenScores,
    by_id: Mapping[str, Sample],
    criterion: Criterion,
    option_scores: Mapping[str, list[TokenScores]],
    completions: Mapping[str, tuple[int, list[tuple[int, ...]]]],
    stop_ids: frozenset[int],
    decode: Callable[[list[int]], str],
) -> dict[str, Any]:
    """What `decide` needs beyond the teacher-forced verdict, for this sample's criterion."""
    sample_id = rendered.sample_id
    if criterion.name == "normalized":
        target = rendered.target_ids
        ended = bool(target) and target[-1] in stop_ids
        return {"target_text": decode(list(target[:-1] if ended else target))}
    if criterion.name == "choice":
        sample = by_id[sample_id]
        return {
            "option_logprobs": [
                list(s.target_logprobs) for s in [scores, *option_scores[sample_id]]
            ],
            "option_texts": [sample.target, *sample.distractors],
        }
    if criterion.name == "sampled":
        seed, drawn = completions[sample_id]
        return {
            "seed": seed,
            "reproduces": [
                reproduces(tokens, rendered.target_ids, stop_ids, decode) for tokens in drawn
            ],
        }
    return {}


def scored_from(rendered: Rendered, job: Job) -> int:
    """Where a sample's pass starts scoring: its target, or with prompt surprisal its prompt's
    second token (the first has no context to be predicted from)."""
    if job.prompt_surprisal and rendered.target_start > 1:
        return 1
    return rendered.target_start


def from_target(scores: TokenScores, offset: int) -> TokenScores:
    """The figures of the target positions of a pass that started `offset` tokens earlier."""
    if offset == 0:
        return scores
    return TokenScores(
        target_logprobs=scores.target_logprobs[offset:],
        top1_ids=scores.top1_ids[offset:],
        top1_logprobs=scores.top1_logprobs[offset:],
        top2_ids=scores.top2_ids[offset:],
        top2_logprobs=scores.top2_logprobs[offset:],
    )


def fitting(
    ready: list[Rendered],
    limit: int | None,
    backend: str,
    entries: dict[str, dict[str, Any]],
    options: Mapping[str, list[Rendered]],
) -> list[Rendered]:
    """The samples the backend can score (each of their options too); the others become
    problems that say what to do."""
    if limit is None:
        return ready
    for r in ready:
        longest = max([len(o.input_ids) for o in options.get(r.sample_id, ())], default=0)
        if max(len(r.input_ids), longest) > limit:
            entries[r.sample_id] = {
                "problem": f"prompt + target is {max(len(r.input_ids), longest)} tokens "
                f"(with the longest distractor) but the {backend} "
                f"backend scores at most {limit} (vLLM keeps one token of max_model_len for "
                "its own output); raise max_model_len in the backend args of ilp.yaml, shorten "
                "the sample, or use --ilp-backend=hf"
            }
    return [r for r in ready if r.sample_id not in entries]


def continuation_request(
    rendered: Rendered,
    position: int,
    token: int,
    stop_ids: frozenset[int],
    settings: ScoringSettings,
    whole: bool,
    least: int = 0,
) -> GenerateRequest:
    """Continue after `token` at target `position`: the target's remaining length, and a bit.

    `whole`: the verdict reads the whole greedy output (it may still spell the target text
    through other, possibly more, tokens; or the criterion is `normalized`), so
    `generate_max_tokens` does not cut it short: twice the target's remaining tokens, and a
    bit, and at least `generate_max_tokens`. `least`: at least this many tokens (within
    `generate_max_tokens`), whatever the target's length.
    """
    remaining = len(rendered.target_ids) - position - 1
    budget = remaining + GENERATE_PAST_TARGET
    if whole:
        budget = max(settings.generate_max_tokens, 2 * remaining + GENERATE_PAST_TARGET)
    return GenerateRequest(
        input_ids=(*rendered.input_ids[: rendered.target_start + position], token),
        max_new_tokens=max(
            1,
            budget if whole else min(settings.generate_max_tokens, max(least, budget)),
        ),
        stop_ids=stop_ids,
    )


def read_probe(
    rendered: Rendered,
    scores: TokenScores,
    position: int,
    generated: tuple[int, ...],
    stop_ids: frozenset[int],
    decode: Callable[[list[int]], str],
) -> Probe:
    top = scores.top1_ids[position]
    tokens = [top, *generated]
    stopped = tokens[-1] in stop_ids
    return Probe(
        position=position,
        top_id=top,
        top_token=decode([top]),
        top_prob=math.exp(scores.top1_logprobs[position]),
        target_prob=math.exp(scores.target_logprobs[position]),
        continuation=decode(tokens[:-1] if stopped else tokens),
        stopped=stopped,
    )
