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

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from typing import Any

from pytest_ilp.core.backends import Progress, describe_backend
from pytest_ilp.core.backends.gguf_loading import gguf_loading
from pytest_ilp.core.cache import CACHE_SCHEMA, ScoreCache, stable_hash
from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.criteria import Criterion
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring.compute import compute
from pytest_ilp.core.scoring.job import (
    PROBE_ANSWER_TOKENS,
    IncompatibleTokenizer,
    Job,
    Probe,
    PromptSurprisal,
    ScoringResult,
    ScoringSettings,
)
from pytest_ilp.core.verdicts import Verdict

__all__ = [
    "IncompatibleTokenizer",
    "Job",
    "Probe",
    "PromptSurprisal",
    "ScoringResult",
    "ScoringSettings",
    "sample_key",
    "score_samples",
]


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
        with _loading(job):
            entries = compute(checkable, settings, job, log, progress)
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
                    with _loading(job):
                        fresh = compute(missing, settings, job, log, progress)
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


@contextmanager
def _loading(job: Job) -> Iterator[None]:
    """A GGUF checkpoint loads with its file parsed once (`gguf_loading`: the tokenizer's
    load and the model's would parse it three times). A model in memory (a training run's) is
    scored in eval mode, then put back in the mode it was in: no dropout, so its figures are
    those of its weights, as a saved checkpoint's."""
    if job.live is None:
        gguf = job.checkpoint.gguf_file or job.renderer.gguf_file
        with gguf_loading() if gguf else nullcontext():
            yield
        return
    model = job.live.model
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


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
