"""The fake backend: a "model" that is a table of answers, for tests that need verdicts fast.

A fake checkpoint is a folder holding a saved tokenizer, a config.json whose `model_type` is
`FAKE_MODEL_TYPE`, and `ANSWERS_FILE`: records in any text or chat format pytest-ilp reads,
each giving a prompt and the answer the model gives to it (the record's completion or last
assistant turn). Build one with `pytest_ilp.testing.fake.write_fake_checkpoint`; such a folder
is always scored by this backend, whatever `--ilp-backend` says, as transformers picks a model
class from `model_type`.

The answers are rendered with the checkpoint's tokenizer as samples are by default, and define
one next-token function: after a table prompt plus the first `k` tokens of its answer, the top
token is the answer's token `k` (its stop token at the end); after anything else it is EOS. The
runner-up is EOS (or, where EOS is the top, the token after it), any other token gets the floor.
`score`, `generate` and `sample` all derive from that one function, so the one-pass verdict
equals greedy generation by construction. Log-probabilities come from the record's optional
`top_logprob` and `second_logprob` fields, else from `fake` in config.json, else the defaults.

Samples rendered with other settings (another render mode, no EOS) meet no table prompt: their
model answers EOS at once. The folder's content is in the cache key like any checkpoint's.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_ilp.core.backends import (
    BackendOptions,
    GenerateRequest,
    Progress,
    SampleRequest,
    ScoreRequest,
    TokenScores,
)
from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.errors import IlpUsageError
from pytest_ilp.core.render import Rendered, RenderSettings, render_samples
from pytest_ilp.core.samples import Sample, sample_from_record

FAKE_MODEL_TYPE = "pytest-ilp-fake"
ANSWERS_FILE = "fake_answers.jsonl"
#: log-probabilities (nats) of the top token, the runner-up and every other token.
DEFAULT_LOGPROBS = {"top_logprob": -0.05, "second_logprob": -3.5, "other_logprob": -12.0}


@dataclass(frozen=True)
class _Next:
    """The model's distribution after one context: top and runner-up tokens, with log-probs."""

    top: int
    top_logprob: float
    second: int
    second_logprob: float
    other_logprob: float

    def logprob(self, token: int) -> float:
        if token == self.top:
            return self.top_logprob
        if token == self.second:
            return self.second_logprob
        return self.other_logprob


class FakeBackend:
    """A `ScoringBackend` whose model is the table in the checkpoint's `ANSWERS_FILE`."""

    max_sequence_length: int | None = None

    def __init__(self, checkpoint: CheckpointInfo, options: BackendOptions) -> None:
        self.folder = checkpoint.folder
        self.eos = int(checkpoint.config["eos_token_id"])
        self.vocab_size = int(checkpoint.config["vocab_size"])
        defaults = {**DEFAULT_LOGPROBS, **dict(checkpoint.config.get("fake") or {})}
        self._next: dict[tuple[int, ...], _Next] = {}
        for (ids, target_start), figures in read_answers(checkpoint, defaults):
            for position in range(target_start, len(ids)):
                self._next[ids[:position]] = self._distribution(ids[position], figures)
        self._unknown = self._distribution(self.eos, defaults)

    def _distribution(self, top: int, figures: Mapping[str, float]) -> _Next:
        second = self.eos if top != self.eos else (self.eos + 1) % self.vocab_size
        return _Next(
            top, figures["top_logprob"], second, figures["second_logprob"], figures["other_logprob"]
        )

    def next_token(self, context: Sequence[int]) -> _Next:
        """The model's distribution after `context` (token ids)."""
        return self._next.get(tuple(context), self._unknown)

    def score(
        self, requests: Sequence[ScoreRequest], progress: Progress | None = None
    ) -> list[TokenScores]:
        results = []
        for request in requests:
            ids = request.input_ids
            steps = [self.next_token(ids[:p]) for p in range(request.target_start, len(ids))]
            results.append(
                TokenScores(
                    target_logprobs=tuple(
                        step.logprob(token)
                        for step, token in zip(steps, ids[request.target_start :], strict=True)
                    ),
                    top1_ids=tuple(step.top for step in steps),
                    top1_logprobs=tuple(step.top_logprob for step in steps),
                    top2_ids=tuple(step.second for step in steps),
                    top2_logprobs=tuple(step.second_logprob for step in steps),
                )
            )
            if progress is not None:
                progress(1)
        return results

    def generate(self, requests: Sequence[GenerateRequest]) -> list[tuple[int, ...]]:
        results = []
        for request in requests:
            context, new = list(request.input_ids), list[int]()
            while len(new) < request.max_new_tokens:
                token = self.next_token(context).top
                new.append(token)
                context.append(token)
                if token in request.stop_ids:
                    break
            results.append(tuple(new))
        return results

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[tuple[int, ...]]]:
        return [
            [self._draw(request, random.Random(f"{request.seed}:{n}")) for n in range(request.n)]
            for request in requests
        ]

    def _draw(self, request: SampleRequest, rng: random.Random) -> tuple[int, ...]:
        """One completion drawn from the next-token distributions at `request.temperature`."""
        context, new = list(request.input_ids), list[int]()
        while len(new) < request.max_new_tokens:
            step = self.next_token(context)
            others = self.vocab_size - 2
            weights = [
                math.exp(step.top_logprob / request.temperature),
                math.exp(step.second_logprob / request.temperature),
                others * math.exp(step.other_logprob / request.temperature),
            ]
            pick = rng.choices(range(3), weights)[0]
            if pick == 0:
                token = step.top
            elif pick == 1:
                token = step.second
            else:
                token = rng.choice(
                    [t for t in range(self.vocab_size) if t not in (step.top, step.second)]
                )
            new.append(token)
            context.append(token)
            if token in request.stop_ids:
                break
        return tuple(new)

    def close(self) -> None:
        """Nothing to free: the table is plain Python data."""


def read_answers(
    checkpoint: CheckpointInfo, defaults: Mapping[str, float]
) -> list[tuple[tuple[tuple[int, ...], int], dict[str, float]]]:
    """Each answer as (token ids, where the answer starts) and its log-probabilities.

    Records written by `write_fake_checkpoint` carry their ids (`input_ids`, `target_start`);
    the others are rendered here with the checkpoint's tokenizer.
    """
    path = checkpoint.folder / ANSWERS_FILE
    if not path.is_file():
        raise IlpUsageError(
            f"{checkpoint.folder} is a fake checkpoint (model_type {FAKE_MODEL_TYPE}) without "
            f"its {ANSWERS_FILE}; write it with pytest_ilp.testing.fake.write_fake_checkpoint"
        )
    answers: list[tuple[tuple[tuple[int, ...], int], dict[str, float]]] = []
    to_render: list[tuple[int, Sample]] = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        record = json.loads(text)
        figures = {name: float(record.pop(name, value)) for name, value in defaults.items()}
        ids, start = record.pop("input_ids", None), record.pop("target_start", None)
        if ids is None:
            to_render.append((len(answers), sample_from_record(record, path, line)))
        answers.append(((tuple(ids or ()), int(start or 0)), figures))
    if to_render:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoint.tokenizer_folder)
        stop_ids = frozenset({tokenizer.eos_token_id, *checkpoint.generation_stop_ids()})
        rendered = render_answers([sample for _, sample in to_render], tokenizer, stop_ids)
        for (index, _), ids_and_start in zip(to_render, rendered, strict=True):
            answers[index] = (ids_and_start, answers[index][1])
    return answers


def render_answers(
    samples: Sequence[Sample], tokenizer: Any, stop_ids: frozenset[int]
) -> list[tuple[tuple[int, ...], int]]:
    """Render answers as samples are rendered by default: (token ids, where the answer starts)."""
    rendered = []
    for sample, result in zip(
        samples, render_samples(samples, tokenizer, RenderSettings(), stop_ids, None), strict=True
    ):
        problem = sample.problem or (None if isinstance(result, Rendered) else result)
        if problem is not None or not isinstance(result, Rendered):
            raise IlpUsageError(f"{sample.location}: a fake model's answer: {problem}")
        rendered.append((result.input_ids, result.target_start))
    return rendered
