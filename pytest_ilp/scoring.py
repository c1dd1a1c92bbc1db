"""Score a set of samples on one checkpoint: cache lookup, render, one batched pass, generation.

This is the only place that sequences samples -> render -> backend -> verdicts. It serves the
checkpoint under test and the checkpoints that give diagnosis its evidence (base model, earlier
stages) alike, so they share batching and the cache, and cost grows linearly with their number.
Everything it returns is plain data: a fully cached run loads neither tokenizer nor model.

Samples are always rendered with the tokenizer of the checkpoint under test (`renderer`), so
every checkpoint scores exactly the same token ids.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any

import pytest

from pytest_ilp.backends import (
    GenerateRequest,
    LiveModel,
    Progress,
    ScoreRequest,
    ScoringBackend,
    TokenScores,
    describe_backend,
    live_backend,
    load_backend,
)
from pytest_ilp.cache import CACHE_SCHEMA, ScoreCache, stable_hash
from pytest_ilp.checkpoint import CheckpointInfo
from pytest_ilp.render import Rendered, render_samples
from pytest_ilp.samples import Sample
from pytest_ilp.settings import Settings
from pytest_ilp.verdicts import Verdict, continues_target, judge, with_production

#: tokens generated past the end of the target, to show what an unlearned sample runs on into.
GENERATE_PAST_TARGET = 8


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


@dataclass
class ScoringResult:
    """Verdicts (or the reason a sample could not be scored) for every sample asked about."""

    checkpoint: CheckpointInfo
    backend: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    probes: dict[str, Probe] = field(default_factory=dict)
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
    #: a model in memory to score instead of loading `checkpoint` (which then describes it,
    #: see `checkpoint.in_memory`), with the tokenizer that renders the samples. Never cached:
    #: its weights change while it trains.
    live: LiveModel | None = None

    @property
    def is_renderer(self) -> bool:
        return self.checkpoint.folder == self.renderer.folder


def score_samples(
    samples: Sequence[Sample],
    settings: Settings,
    job: Job,
    cache: ScoreCache | None,
    log: Callable[[str], None],
    progress: Callable[[int], Progress | None],
) -> ScoringResult:
    """Verdicts for `samples` on `job.checkpoint`, scoring only what the cache does not hold."""
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
        if sample.problem is not None:
            result.problems[sample.id] = sample.problem
        else:
            checkable.append(sample)
    keys = {s.id: _entry_key(s, job) for s in checkable}

    if cache is None:
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
    result.seconds = time.perf_counter() - started
    return result


def sample_key(sample: Sample) -> str:
    return stable_hash(sample.content_key())


def _entry_key(sample: Sample, job: Job) -> str:
    key = sample_key(sample)
    position = job.probe_at.get(sample.id)
    return key if position is None else f"{key}@{position}"


def _run_key(settings: Settings, job: Job, cache: ScoreCache, description: str) -> str:
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
    settings: Settings,
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
    if not ready:
        return entries

    def decode(ids: list[int]) -> str:
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
        ready = _fitting(ready, backend.max_sequence_length, settings.backend, entries)
        scores, verdicts, generated = check(
            ready,
            backend,
            stop_ids,
            decode,
            settings.generate_max_tokens,
            job.produce,
            job.probe_at,
            progress(len(ready)),
        )
    finally:
        backend.close()
    for rendered_sample, token_scores, verdict in zip(ready, scores, verdicts):
        sample_id = rendered_sample.sample_id
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
        entries[sample_id] = entry
    return entries


def check(
    ready: Sequence[Rendered],
    backend: ScoringBackend,
    stop_ids: frozenset[int],
    decode: Callable[[list[int]], str],
    generate_max_tokens: int,
    produce: bool = True,
    probe_at: Mapping[str, int] = MappingProxyType({}),
    progress: Progress | None = None,
) -> tuple[list[TokenScores], list[Verdict], dict[str, tuple[int, ...]]]:
    """The teacher-forced pass, its verdicts, and the generation they need, on a loaded backend.

    Returns the token scores and the final verdicts in `ready`'s order, and what was generated
    by sample id (`probe:<id>` for the continuations `probe_at` asks for).
    """
    scores = backend.score([ScoreRequest(r.input_ids, r.target_start) for r in ready], progress)
    verdicts = [judge(r, s, stop_ids, decode) for r, s in zip(ready, scores)]
    # Where greedy decoding leaves the target, and with which token, is known from the pass:
    # only what follows that token is generated (nothing, if it ends the reply). A sample whose
    # predicted token still spells the target text is generated for every checkpoint (its
    # verdict is about the text); the others only to show what they produce.
    spelling = {
        r.sample_id for r, v in zip(ready, verdicts) if continues_target(v, stop_ids, decode)
    }
    starts: dict[str, tuple[Rendered, int, int, bool]] = {}
    for r, s, v in zip(ready, scores, verdicts):
        if v.first_divergence is not None and (produce or r.sample_id in spelling):
            starts[r.sample_id] = (
                r,
                v.first_divergence.position,
                v.first_divergence.predicted_id,
                r.sample_id in spelling,
            )
        if r.sample_id in probe_at:
            position = probe_at[r.sample_id]
            starts[f"probe:{r.sample_id}"] = (r, position, s.top1_ids[position], False)
    wanted = {k: v for k, v in starts.items() if v[2] not in stop_ids}
    requests = [
        _continuation_request(r, position, token, stop_ids, generate_max_tokens, whole)
        for r, position, token, whole in wanted.values()
    ]
    generated = dict(zip(wanted, backend.generate(requests)))
    for index, (r, s, v) in enumerate(zip(ready, scores, verdicts)):
        if v.first_divergence is not None and (produce or r.sample_id in spelling):
            v = with_production(v, s, generated.get(r.sample_id, ()), stop_ids, decode)
            verdicts[index] = v if produce else replace(v, produced=None, produced_stopped=False)
    return scores, verdicts, generated


def _fitting(
    ready: list[Rendered], limit: int | None, backend: str, entries: dict[str, dict[str, Any]]
) -> list[Rendered]:
    """The samples the backend can score; the others become problems that say what to do."""
    if limit is None:
        return ready
    for r in ready:
        if len(r.input_ids) > limit:
            entries[r.sample_id] = {
                "problem": f"prompt + target is {len(r.input_ids)} tokens but the {backend} "
                f"backend scores at most {limit} (vLLM keeps one token of max_model_len for "
                "its own output); raise max_model_len in the backend args of ilp.yaml, shorten "
                "the sample, or use --ilp-backend=hf"
            }
    return [r for r in ready if len(r.input_ids) <= limit]


def _continuation_request(
    rendered: Rendered,
    position: int,
    token: int,
    stop_ids: frozenset[int],
    generate_max_tokens: int,
    whole: bool,
) -> GenerateRequest:
    """Continue after `token` at target `position`: the target's remaining length, and a bit.

    `whole`: the continuation may still spell the target text, so it may run to the target's
    end (through other, possibly more, tokens) whatever `generate_max_tokens` says.
    """
    remaining = len(rendered.target_ids) - position - 1
    budget = remaining + GENERATE_PAST_TARGET
    return GenerateRequest(
        input_ids=(*rendered.input_ids[: rendered.target_start + position], token),
        max_new_tokens=max(1, budget if whole else min(generate_max_tokens, budget)),
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
        raise pytest.UsageError(
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
    raise pytest.UsageError(
        f"{job.checkpoint.folder}: the tokenizer produced token id {largest} but the model's "
        f"vocabulary has {vocab} entries: the tokenizer and the weights do not belong "
        "together (save the tokenizer the model was trained with into the checkpoint)"
    )
