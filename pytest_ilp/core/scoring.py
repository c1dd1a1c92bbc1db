"""Score a set of samples on one checkpoint: cache lookup, render, one batched pass, generation.

This is the only place that sequences samples -> render -> backend -> verdicts. It serves the
checkpoint under test and the checkpoints that give diagnosis its evidence (base model, earlier
stages) alike, so they share batching and the cache, and cost grows linearly with their number.
Everything it returns is plain data: a fully cached run loads neither tokenizer nor model.

Samples are always rendered with the tokenizer of the checkpoint under test (`renderer`), so
every checkpoint scores exactly the same token ids.

Each sample is judged by its criterion (`Job.criteria`, see `pytest_ilp.core.criteria`): the pass
gives every teacher-forced figure; `choice` adds each distractor as one more request sharing
the sample's prompt, `sampled` draws completions, `normalized` generates the greedy output.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from pytest_ilp.core.backends import (
    BackendOptions,
    GenerateRequest,
    LiveModel,
    Progress,
    SampleRequest,
    ScoreRequest,
    TokenScores,
    describe_backend,
    live_backend,
    load_backend,
)
from pytest_ilp.core.cache import CACHE_SCHEMA, ScoreCache, stable_hash
from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.criteria import EXACT, Criterion
from pytest_ilp.core.decoding import byte_safe_decoder
from pytest_ilp.core.errors import IlpUsageError
from pytest_ilp.core.render import Rendered, RenderSettings, render_samples
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.verdicts import (
    Verdict,
    continues_target,
    decide,
    judge,
    reproduces,
    with_production,
    with_token_figures,
)

#: tokens generated past the end of the target, to show what an unlearned sample runs on into.
GENERATE_PAST_TARGET = 8
#: tokens a probed checkpoint (the base model) may take to give its own answer at a divergence:
#: a chat model answers in a sentence ("The capital of the Czech Republic is Prague."), which
#: the diagnosis reads (`pytest_ilp.core.answers`).
PROBE_ANSWER_TOKENS = 24


class ScoringSettings(Protocol):
    """The settings scoring reads (`config.settings.Settings` has them, among others)."""

    @property
    def backend(self) -> str: ...
    @property
    def backend_options(self) -> BackendOptions: ...
    @property
    def render(self) -> RenderSettings: ...
    @property
    def generate_max_tokens(self) -> int: ...


class IncompatibleTokenizer(Exception):
    """A base or history checkpoint whose tokenizer does not match the one under test."""


@dataclass(frozen=True)
class Probe:
    """What a checkpoint does at one target position (where the checkpoint under test diverged).

    `continuation` is its greedy output from the prompt and the target's first `position`
    tokens: its own answer at the point where the fine-tuned model left the target.
    """

    position: int
    top_id: int
    top_token: str
    top_prob: float
    target_prob: float
    continuation: str = ""
    stopped: bool = False


@dataclass(frozen=True)
class PromptSurprisal:
    """A checkpoint on a sample's prompt: how familiar the question's own words are to it.

    `pieces` are the prompt's tokens as text; `surprisal[i]` is the checkpoint's surprisal
    (nats) at `pieces[i + 1]` given the tokens before it (the first token has no context).
    """

    pieces: tuple[str, ...]
    surprisal: tuple[float, ...]


@dataclass
class ScoringResult:
    """Verdicts (or the reason a sample could not be scored) for every sample asked about."""

    checkpoint: CheckpointInfo
    backend: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    probes: dict[str, Probe] = field(default_factory=dict)
    prompts: dict[str, PromptSurprisal] = field(default_factory=dict)
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Job:
    """One checkpoint to score: what to compute beyond the verdicts."""

    checkpoint: CheckpointInfo
    #: the checkpoint whose tokenizer renders the samples (the one under test).
    renderer: CheckpointInfo
    #: generate what each unlearned sample produces (for the checkpoint under test).
    produce: bool = True
    #: sample id -> target position to probe (the divergence of the checkpoint under test).
    probe_at: Mapping[str, int] = field(default_factory=dict)
    #: sample id -> the criterion that judges it; `exact` for the samples not named.
    criteria: Mapping[str, Criterion] = field(default_factory=dict)
    #: score each sample's prompt too (`PromptSurprisal`), in the same pass.
    prompt_surprisal: bool = False
    #: a model in memory to score instead of loading `checkpoint` (which then describes it,
    #: see `checkpoint.in_memory`), with the tokenizer that renders the samples. Never cached:
    #: its weights change while it trains.
    live: LiveModel | None = None

    def criterion_of(self, sample_id: str) -> Criterion:
        return self.criteria.get(sample_id, EXACT)

    @property
    def is_renderer(self) -> bool:
        return self.checkpoint.folder == self.renderer.folder


def score_samples(
    samples: Sequence[Sample],
    settings: ScoringSettings,
    job: Job,
    cache: ScoreCache | None,
    log: Callable[[str], None],
    progress: Callable[[int], Progress | None],
    cached_only: bool = False,
) -> ScoringResult:
    """Verdicts for `samples` on `job.checkpoint`, scoring only what the cache does not hold.

    `cached_only`: score nothing; the result holds only the samples the cache has (for the
    samples outside the selection, which count towards the budgets when known)."""
    started = time.perf_counter()
    if job.live is not None:
        if cache is not None:
            raise ValueError("a model in memory is never cached: pass cache=None")
        description = job.live.describe()
    else:
        description = describe_backend(settings.backend, job.checkpoint, settings.backend_options)
    result = ScoringResult(checkpoint=job.checkpoint, backend=description)
    checkable = []
    for sample in samples:
        problem = sample.problem or _criterion_problem(sample, job.criterion_of(sample.id))
        if problem is not None:
            result.problems[sample.id] = problem
        else:
            checkable.append(sample)
    keys = {s.id: _entry_key(s, job) for s in checkable}

    if cached_only:
        if cache is not None:
            run_key = _run_key(settings, job, cache, description)
            entries = _lookup(cache.load(run_key), checkable, keys)
        else:
            entries = {}
        checkable = [s for s in checkable if s.id in entries]
        result.cached = len(checkable)
    elif cache is None:
        entries = _compute(checkable, settings, job, log, progress)
        result.computed = len(checkable)
    else:
        run_key = _run_key(settings, job, cache, description)
        entries = _lookup(cache.load(run_key), checkable, keys)
        missing = [s for s in checkable if s.id not in entries]
        if missing:
            # Another process (an xdist worker) may be scoring the same samples: wait for it,
            # then score only what is still missing.
            with cache.locked(run_key):
                entries.update(_lookup(cache.load(run_key), missing, keys))
                missing = [s for s in missing if s.id not in entries]
                if missing:
                    fresh = _compute(missing, settings, job, log, progress)
                    cache.append(run_key, {keys[i]: entry for i, entry in fresh.items()})
                    entries.update(fresh)
        result.computed = len(missing)
        result.cached = len(checkable) - len(missing)

    for sample in checkable:
        entry = entries[sample.id]
        if "problem" in entry:
            result.problems[sample.id] = entry["problem"]
            continue
        result.verdicts[sample.id] = Verdict.from_dict(entry["verdict"], sample.id)
        if "probe" in entry:
            result.probes[sample.id] = Probe(**entry["probe"])
        if "prompt" in entry:
            result.prompts[sample.id] = PromptSurprisal(
                tuple(entry["prompt"]["pieces"]), tuple(entry["prompt"]["surprisal"])
            )
    result.seconds = time.perf_counter() - started
    return result


def sample_key(sample: Sample) -> str:
    return stable_hash(sample.content_key())


def _entry_key(sample: Sample, job: Job) -> str:
    key = sample_key(sample)
    criterion = job.criterion_of(sample.id)
    if criterion.name != "exact":
        key += f"|{criterion.spec}"  # sampled's carries its seed
    if criterion.name == "choice":
        key += "|" + stable_hash(list(sample.distractors))
    position = job.probe_at.get(sample.id)
    if position is not None:
        # The probe's answer is as long as PROBE_ANSWER_TOKENS allows.
        key = f"{key}@{position}/{PROBE_ANSWER_TOKENS}"
    return f"{key}+prompt" if job.prompt_surprisal else key


def sample_seed(seed: int, sample: Sample) -> int:
    """The seed of one sample's draws under `sampled`: the criterion's seed and the sample's
    content, hashed. It does not depend on the other samples, their order or the batch."""
    return int(stable_hash({"seed": seed, "sample": sample.content_key()}, length=8), 16) % 2**31


def _criterion_problem(sample: Sample, criterion: Criterion) -> str | None:
    if criterion.name != "choice":
        return None
    if not sample.distractors:
        return (
            "the choice criterion needs wrong responses to compare the target with: give the "
            'record a "distractors": ["...", ...] list, or judge it by another criterion'
        )
    if sample.target in sample.distractors:
        number = sample.distractors.index(sample.target) + 1
        return f"distractor {number} is the target itself: the choice would be a tie"
    return None


def _run_key(settings: ScoringSettings, job: Job, cache: ScoreCache, description: str) -> str:
    return stable_hash(
        {
            "schema": CACHE_SCHEMA,
            "checkpoint": _checkpoint_digest(cache, job.checkpoint),
            # An adapter's verdicts depend on the base model it is applied to as well.
            "adapter_base": (
                None
                if job.checkpoint.base_folder is None
                else cache.folder_digest(job.checkpoint.base_folder)
            ),
            # The token ids come from the renderer's tokenizer.
            "renderer": None if job.is_renderer else _checkpoint_digest(cache, job.renderer),
            "backend": description,
            "backend_args": dict(settings.backend_options.args),
            "render": asdict(settings.render),
            "produce": job.produce,
            "generate_max_tokens": settings.generate_max_tokens,
            # Texts (produced, divergence tokens) are decoded byte-safe: not from older entries.
            "decode": "byte-safe",
        }
    )


def _checkpoint_digest(cache: ScoreCache, checkpoint: CheckpointInfo) -> str:
    """The content of the checkpoint: its folder's files, or its GGUF file alone (a GGUF holds
    the weights, the tokenizer and the chat template; its folder may hold anything else)."""
    if checkpoint.gguf_file is not None:
        return cache.files_digest([checkpoint.location])
    return cache.folder_digest(checkpoint.folder)


def _lookup(
    stored: dict[str, Any], samples: Sequence[Sample], keys: dict[str, str]
) -> dict[str, Any]:
    return {s.id: stored[keys[s.id]] for s in samples if keys[s.id] in stored}


def _compute(
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
    tokenizer = job.live.tokenizer if job.live is not None else load_tokenizer(job.renderer, trust)
    if not job.is_renderer:
        _check_same_tokenizer(tokenizer, load_tokenizer(job.checkpoint, trust), job)
    stop_ids = frozenset({tokenizer.eos_token_id, *job.checkpoint.generation_stop_ids()} - {None})
    rendered = render_samples(
        samples, tokenizer, settings.render, stop_ids, job.checkpoint.max_length
    )
    entries: dict[str, dict[str, Any]] = {}
    ready: list[Rendered] = []
    for sample, item in zip(samples, rendered):
        if isinstance(item, str):
            entries[sample.id] = {"problem": item}
        elif (problem := _vocabulary_problem(item, job)) is not None:
            entries[sample.id] = {"problem": problem}
        else:
            ready.append(item)
    by_id = {s.id: s for s in samples}
    options = _render_options(
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
        ready = _fitting(ready, backend.max_sequence_length, settings.backend, entries, options)
        # With prompt surprisal, a sample is scored from its prompt's second token on: the
        # same pass then says how surprising the prompt is (the target's figures are split
        # off below). The options of a choice sample share its prompt instead: one group per
        # sample, each scored from the target on.
        starts_at = [
            r.target_start if r.sample_id in options else _scored_from(r, job) for r in ready
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
            _from_target(s, r.target_start - start) for r, s, start in zip(ready, both, starts_at)
        ]
        option_scores: dict[str, list[TokenScores]] = {}
        rest = iter(scored[len(ready) :])
        for r in ready:
            option_scores[r.sample_id] = [next(rest) for _ in options.get(r.sample_id, ())]
        verdicts = {r.sample_id: judge(r, s, stop_ids, decode) for r, s in zip(ready, scores)}
        completions = _sampled(ready, by_id, job, backend, stop_ids)
        # Whether each sample is learned by the pass alone (a divergence may still turn out
        # to spell the target text): only unlearned ones are generated to show their output.
        pre = {
            r.sample_id: not job.criterion_of(r.sample_id).needs_greedy_output
            and decide(
                verdicts[r.sample_id],
                job.criterion_of(r.sample_id),
                **_evidence(
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
                        _continuation_request(
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
            **_evidence(
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
                _probe(
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


def _render_options(
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
            problem = option if isinstance(option, str) else _vocabulary_problem(option, job)
            if problem is not None:
                entries[sample.id] = {"problem": f"distractor {number}: {problem}"}
                break
        else:
            options[sample.id] = [o for o in own if isinstance(o, Rendered)]
    return options


def _sampled(
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


def _evidence(
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


def _scored_from(rendered: Rendered, job: Job) -> int:
    """Where a sample's pass starts scoring: its target, or with prompt surprisal its prompt's
    second token (the first has no context to be predicted from)."""
    if job.prompt_surprisal and rendered.target_start > 1:
        return 1
    return rendered.target_start


def _from_target(scores: TokenScores, offset: int) -> TokenScores:
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


def _fitting(
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


def _continuation_request(
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


def _probe(
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


def load_tokenizer(checkpoint: CheckpointInfo, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    folder = checkpoint.tokenizer_folder  # an adapter's own, else its base model's
    try:
        return AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, **checkpoint.load_arguments()
        )
    except Exception as exc:  # OSError, ValueError... from transformers
        raise IlpUsageError(
            f"transformers could not load a tokenizer from {folder}: "
            f"{type(exc).__name__}: {exc}; save one with tokenizer.save_pretrained(...)"
        ) from exc


def _check_same_tokenizer(renderer: Any, own: Any, job: Job) -> None:
    """The other checkpoint must read the rendered ids as the same tokens (it may know fewer)."""
    rendering = renderer.get_vocab()
    differing = [t for t, i in own.get_vocab().items() if rendering.get(t, i) != i]
    if differing:
        raise IncompatibleTokenizer(
            f"{job.checkpoint.folder} has another tokenizer than {job.renderer.folder} "
            f"({len(differing)} tokens have other ids, e.g. {differing[0]!r})"
        )


def _vocabulary_problem(rendered: Rendered, job: Job) -> str | None:
    vocab = job.checkpoint.config.get("vocab_size")
    if not isinstance(vocab, int):
        return None
    largest = max(rendered.input_ids)
    if largest < vocab:
        return None
    if not job.is_renderer:
        return f"uses token id {largest}, which {job.checkpoint.name} has no embedding for"
    raise IlpUsageError(
        f"{job.checkpoint.folder}: the tokenizer produced token id {largest} but the model's "
        f"vocabulary has {vocab} entries: the tokenizer and the weights do not belong "
        "together (save the tokenizer the model was trained with into the checkpoint)"
    )
