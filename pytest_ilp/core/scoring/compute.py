"""One scoring pass over the samples the cache does not hold: render, one batched
teacher-forced pass, then only the generation the verdicts need."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

from pytest_ilp.core.backends import Progress, ScoreRequest, TokenScores, live_backend, load_backend
from pytest_ilp.core.decoding import byte_safe_decoder
from pytest_ilp.core.render import Rendered, render_samples
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring.job import PROBE_ANSWER_TOKENS, Job, ScoringSettings
from pytest_ilp.core.scoring.requests import (
    continuation_request,
    criterion_evidence,
    fitting,
    from_target,
    read_probe,
    render_options,
    sampled_completions,
    scored_from,
)
from pytest_ilp.core.scoring.tokenizer import (
    check_same_tokenizer,
    load_tokenizer,
    vocabulary_problem,
)
from pytest_ilp.core.verdicts import (
    continues_target,
    decide,
    judge,
    with_production,
    with_token_figures,
)


def compute(
    samples: Sequence[Sample],
    settings: ScoringSettings,
    job: Job,
    log: Callable[[str], None],
    progress: Callable[[int], Progress | None],
) -> dict[str, dict[str, Any]]:
    """Entries `{"verdict": ..., "probe": ...}` or `{"problem": ...}` for each sample, by id."""
    if not samples:
        return {}
    trust = settings.backend_options.trust_remote_code
    tokenizer = job.live.tokenizer if job.live is not None else job.renderer_tokenizer
    if tokenizer is None:
        tokenizer = load_tokenizer(job.renderer, trust)
    if not job.is_renderer:
        check_same_tokenizer(tokenizer, load_tokenizer(job.checkpoint, trust), job)
    stop_ids = frozenset({tokenizer.eos_token_id, *job.checkpoint.generation_stop_ids()} - {None})
    rendered = render_samples(
        samples, tokenizer, settings.render, stop_ids, job.checkpoint.max_length
    )
    entries: dict[str, dict[str, Any]] = {}
    ready: list[Rendered] = []
    for sample, item in zip(samples, rendered):
        if isinstance(item, str):
            entries[sample.id] = {"problem": item}
        elif (problem := vocabulary_problem(item, job)) is not None:
            entries[sample.id] = {"problem": problem}
        else:
            ready.append(item)
    by_id = {s.id: s for s in samples}
    options = render_options(
        [by_id[r.sample_id] for r in ready if job.criterion_of(r.sample_id).name == "choice"],
        tokenizer,
        settings,
        stop_ids,
        job,
        entries,
    )
    ready = [r for r in ready if r.sample_id not in entries]
    if not ready:
        return entries

    decode = byte_safe_decoder(tokenizer)

    def plain_decode(ids: list[int]) -> str:
        text: str = tokenizer.decode(ids, skip_special_tokens=False)
        return text

    log(
        f"scoring {len(ready)} samples ({sum(len(r.input_ids) for r in ready)} tokens) "
        f"on {job.checkpoint.name} with {settings.backend}"
    )
    if job.live is not None:
        backend = live_backend(job.live, settings.backend_options)
    else:
        backend = load_backend(settings.backend, job.checkpoint, settings.backend_options)
    try:
        ready = fitting(ready, backend.max_sequence_length, settings.backend, entries, options)
        # With prompt surprisal, a sample is scored from its prompt's second token on: the
        # same pass then says how surprising the prompt is (the target's figures are split
        # off below). The options of a choice sample share its prompt instead: one group per
        # sample, each scored from the target on.
        starts_at = [
            r.target_start if r.sample_id in options else scored_from(r, job) for r in ready
        ]
        requests = [
            ScoreRequest(r.input_ids, start, i if r.sample_id in options else None)
            for i, (r, start) in enumerate(zip(ready, starts_at))
        ]
        for i, r in enumerate(ready):
            requests += [
                ScoreRequest(o.input_ids, o.target_start, i) for o in options.get(r.sample_id, ())
            ]
        scored = backend.score(requests, progress(len(requests)))
        both = scored[: len(ready)]
        prompt_scores = {
            r.sample_id: s.target_logprobs[: r.target_start - start]
            for r, s, start in zip(ready, both, starts_at)
            if start < r.target_start
        }
        scores = [
            from_target(s, r.target_start - start) for r, s, start in zip(ready, both, starts_at)
        ]
        option_scores: dict[str, list[TokenScores]] = {}
        rest = iter(scored[len(ready) :])
        for r in ready:
            option_scores[r.sample_id] = [next(rest) for _ in options.get(r.sample_id, ())]
        verdicts = {r.sample_id: judge(r, s, stop_ids, decode) for r, s in zip(ready, scores)}
        completions = sampled_completions(ready, by_id, job, backend, stop_ids)
        # Whether each sample is learned by the pass alone (a divergence may still turn out
        # to spell the target text): only unlearned ones are generated to show their output.
        pre = {
            r.sample_id: not job.criterion_of(r.sample_id).needs_greedy_output
            and decide(
                verdicts[r.sample_id],
                job.criterion_of(r.sample_id),
                **criterion_evidence(
                    r,
                    s,
                    by_id,
                    job.criterion_of(r.sample_id),
                    option_scores,
                    completions,
                    stop_ids,
                    decode,
                ),
            ).learned
            for r, s in zip(ready, scores)
        }
        # Where greedy decoding leaves the target, and with which token, is known from the
        # pass: only what follows that token is generated (nothing, if it ends the reply).
        # A sample whose predicted token still spells the target text is generated for every
        # checkpoint (its verdict is about the text), as is one whose criterion compares the
        # whole greedy output (normalized); the others only to show what an unlearned sample
        # produces (`pre`: the verdict before any retokenized reading).
        spelling = {
            r.sample_id for r in ready if continues_target(verdicts[r.sample_id], stop_ids, decode)
        }
        starts: dict[str, tuple[Rendered, int, int, bool]] = {}
        for r, s in zip(ready, scores):
            v = verdicts[r.sample_id]
            whole = r.sample_id in spelling or job.criterion_of(r.sample_id).needs_greedy_output
            if v.first_divergence is not None and (whole or (job.produce and not pre[r.sample_id])):
                divergence = v.first_divergence
                starts[r.sample_id] = (r, divergence.position, divergence.predicted_id, whole)
            if r.sample_id in job.probe_at:
                position = job.probe_at[r.sample_id]
                starts[f"probe:{r.sample_id}"] = (r, position, s.top1_ids[position], False)
        wanted = {k: v for k, v in starts.items() if v[2] not in stop_ids}
        generated = dict(
            zip(
                wanted,
                backend.generate(
                    [
                        continuation_request(
                            r,
                            position,
                            token,
                            stop_ids,
                            settings,
                            whole,
                            least=PROBE_ANSWER_TOKENS if key.startswith("probe:") else 0,
                        )
                        for key, (r, position, token, whole) in wanted.items()
                    ]
                ),
            )
        )
    finally:
        backend.close()
    for rendered_sample, token_scores in zip(ready, scores):
        sample_id = rendered_sample.sample_id
        verdict = verdicts[sample_id]
        if sample_id in starts:
            verdict = with_production(
                verdict, token_scores, generated.get(sample_id, ()), stop_ids, decode
            )
        criterion = job.criterion_of(sample_id)
        verdict = decide(
            verdict,
            criterion,
            **criterion_evidence(
                rendered_sample,
                token_scores,
                by_id,
                criterion,
                option_scores,
                completions,
                stop_ids,
                decode,
            ),
        )
        if not job.produce or verdict.learned:
            verdict = replace(verdict, produced=None, produced_stopped=False)
        else:
            # What the HTML report shows of an unlearned sample: each target token's
            # probability and text (split where the plain decode says a character is whole).
            verdict = with_token_figures(verdict, token_scores, plain_decode)
        entry: dict[str, Any] = {"verdict": verdict.to_dict()}
        if sample_id in job.probe_at:
            entry["probe"] = asdict(
                read_probe(
                    rendered_sample,
                    token_scores,
                    job.probe_at[sample_id],
                    generated.get(f"probe:{sample_id}", ()),
                    stop_ids,
                    decode,
                )
            )
        if sample_id in prompt_scores:
            prompt = rendered_sample.input_ids[: rendered_sample.target_start]
            entry["prompt"] = {
                "pieces": [decode([t]) for t in prompt],
                "surprisal": [round(-lp, 4) for lp in prompt_scores[sample_id]],
            }
        entries[sample_id] = entry
    return entries
