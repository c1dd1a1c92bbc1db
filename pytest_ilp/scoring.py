"""Score a set of samples once: cache lookup, render, one batched pass, generation for failures.

This is the only place that sequences samples -> render -> backend -> verdicts. Everything it
returns is plain data, so a fully cached run imports no model runtime beyond resolving the
device (torch) and loads neither tokenizer nor model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

from pytest_ilp.backends import (
    GenerateRequest,
    Progress,
    ScoreRequest,
    describe_backend,
    load_backend,
)
from pytest_ilp.cache import CACHE_SCHEMA, ScoreCache, stable_hash
from pytest_ilp.checkpoint import CheckpointInfo
from pytest_ilp.render import Rendered, render_samples
from pytest_ilp.samples import Sample
from pytest_ilp.settings import Settings
from pytest_ilp.verdicts import Verdict, judge, with_production

#: tokens generated past the end of the target, to show what an unlearned sample runs on into.
GENERATE_PAST_TARGET = 8


@dataclass
class ScoringResult:
    """Verdicts (or the reason a sample could not be scored) for every sample asked about."""

    backend: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


def score_samples(
    samples: Sequence[Sample],
    settings: Settings,
    checkpoint: CheckpointInfo,
    cache: ScoreCache | None,
    log: Callable[[str], None],
    progress: Callable[[int], Progress | None],
) -> ScoringResult:
    """Verdicts for `samples`, scoring only those the cache does not hold."""
    started = time.perf_counter()
    description = describe_backend(settings.backend, checkpoint, settings.backend_options)
    result = ScoringResult(backend=description)
    checkable = []
    for sample in samples:
        if sample.problem is not None:
            result.problems[sample.id] = sample.problem
        else:
            checkable.append(sample)
    keys = {s.id: sample_key(s) for s in checkable}

    if cache is None:
        entries = _compute(checkable, settings, checkpoint, log, progress)
        result.computed = len(checkable)
    else:
        run_key = _run_key(settings, checkpoint, cache, description)
        entries = _lookup(cache.load(run_key), checkable, keys)
        missing = [s for s in checkable if s.id not in entries]
        if missing:
            # Another process (an xdist worker) may be scoring the same samples: wait for it,
            # then score only what is still missing.
            with cache.locked(run_key):
                entries.update(_lookup(cache.load(run_key), missing, keys))
                missing = [s for s in missing if s.id not in entries]
                if missing:
                    fresh = _compute(missing, settings, checkpoint, log, progress)
                    cache.append(run_key, {keys[i]: entry for i, entry in fresh.items()})
                    entries.update(fresh)
        result.computed = len(missing)
        result.cached = len(checkable) - len(missing)

    for sample in checkable:
        entry = entries[sample.id]
        if "problem" in entry:
            result.problems[sample.id] = entry["problem"]
        else:
            result.verdicts[sample.id] = Verdict.from_dict(entry["verdict"], sample.id)
    result.seconds = time.perf_counter() - started
    return result


def sample_key(sample: Sample) -> str:
    return stable_hash(sample.content_key())


def _run_key(
    settings: Settings, checkpoint: CheckpointInfo, cache: ScoreCache, description: str
) -> str:
    return stable_hash(
        {
            "schema": CACHE_SCHEMA,
            "checkpoint": cache.folder_digest(checkpoint.folder),
            "backend": description,
            "backend_args": dict(settings.backend_options.args),
            "render": asdict(settings.render),
            "generate_max_tokens": settings.generate_max_tokens,
        }
    )


def _lookup(
    stored: dict[str, Any], samples: Sequence[Sample], keys: dict[str, str]
) -> dict[str, Any]:
    return {s.id: stored[keys[s.id]] for s in samples if keys[s.id] in stored}


def _compute(
    samples: Sequence[Sample],
    settings: Settings,
    checkpoint: CheckpointInfo,
    log: Callable[[str], None],
    progress: Callable[[int], Progress | None],
) -> dict[str, dict[str, Any]]:
    """Entries `{"verdict": ...}` or `{"problem": ...}` for each sample, by id."""
    if not samples:
        return {}
    tokenizer = load_tokenizer(checkpoint, settings.backend_options.trust_remote_code)
    stop_ids = frozenset({tokenizer.eos_token_id, *checkpoint.generation_stop_ids()} - {None})
    rendered = render_samples(samples, tokenizer, settings.render, stop_ids, checkpoint.max_length)
    entries: dict[str, dict[str, Any]] = {}
    ready: list[Rendered] = []
    for sample, item in zip(samples, rendered):
        if isinstance(item, str):
            entries[sample.id] = {"problem": item}
        else:
            ready.append(item)
    if not ready:
        return entries
    _check_vocabulary(ready, checkpoint)

    def decode(ids: list[int]) -> str:
        text: str = tokenizer.decode(ids, skip_special_tokens=False)
        return text

    log(
        f"scoring {len(ready)} samples "
        f"({sum(len(r.input_ids) for r in ready)} tokens) with {settings.backend}"
    )
    backend = load_backend(settings.backend, checkpoint, settings.backend_options)
    try:
        scores = backend.score(
            [ScoreRequest(r.input_ids, r.target_start) for r in ready], progress(len(ready))
        )
        verdicts = [judge(r, s, stop_ids, decode) for r, s in zip(ready, scores)]
        # Greedy decoding agrees with the target up to the divergence and picks the predicted
        # token there; only what follows is generated (nothing, if that token ends the reply).
        failing = [
            (r, v)
            for r, v in zip(ready, verdicts)
            if v.first_divergence is not None and v.first_divergence.predicted_id not in stop_ids
        ]
        generated = backend.generate(
            [
                _continuation_request(r, v, stop_ids, settings.generate_max_tokens)
                for r, v in failing
            ]
        )
    finally:
        backend.close()
    continuations = {v.sample_id: tokens for (_, v), tokens in zip(failing, generated)}
    produced = {
        v.sample_id: with_production(v, continuations.get(v.sample_id, ()), stop_ids, decode)
        for v in verdicts
        if not v.learned
    }
    for verdict in verdicts:
        final = produced.get(verdict.sample_id, verdict)
        entries[verdict.sample_id] = {"verdict": final.to_dict()}
    return entries


def _continuation_request(
    rendered: Rendered, verdict: Verdict, stop_ids: frozenset[int], budget: int
) -> GenerateRequest:
    """Continue after the divergent token: the target's remaining length, a little more."""
    divergence = verdict.first_divergence
    assert divergence is not None
    remaining = len(rendered.target_ids) - divergence.position - 1
    return GenerateRequest(
        input_ids=(
            *rendered.input_ids[: rendered.target_start + divergence.position],
            divergence.predicted_id,
        ),
        max_new_tokens=max(1, min(budget, remaining + GENERATE_PAST_TARGET)),
        stop_ids=stop_ids,
    )


def load_tokenizer(checkpoint: CheckpointInfo, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(checkpoint.folder, trust_remote_code=trust_remote_code)
    except Exception as exc:  # OSError, ValueError... from transformers
        raise pytest.UsageError(
            f"transformers could not load a tokenizer from {checkpoint.folder}: "
            f"{type(exc).__name__}: {exc}; save one with tokenizer.save_pretrained(...)"
        ) from exc


def _check_vocabulary(rendered: Sequence[Rendered], checkpoint: CheckpointInfo) -> None:
    vocab = checkpoint.config.get("vocab_size")
    if not isinstance(vocab, int):
        return
    largest = max(max(r.input_ids) for r in rendered)
    if largest >= vocab:
        raise pytest.UsageError(
            f"{checkpoint.folder}: the tokenizer produced token id {largest} but the model's "
            f"vocabulary has {vocab} entries: the tokenizer and the weights do not belong "
            "together (save the tokenizer the model was trained with into the checkpoint)"
        )
