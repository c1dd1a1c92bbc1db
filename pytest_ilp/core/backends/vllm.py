"""The vLLM backend: teacher-forced scoring as a prefill with `prompt_logprobs`.

Scoring sends each request's token ids as `{"prompt_token_ids": [...]}` (the ids the pipeline
rendered once, so vLLM scores exactly what the hf backend scores) with
`SamplingParams(max_tokens=1, prompt_logprobs=2)`. For every prompt position `t >= 1` vLLM
returns a map `{token id: Logprob(logprob, rank)}` about predicting `input_ids[t]` from
`input_ids[:t]`: the actual token and the two most likely tokens, with raw log-probabilities
(the log-softmax of the logits, as the hf backend computes it). `TokenScores` maps onto it as

    target_logprobs[i]      the actual token's entry at position target_start + i
    top1_* / top2_*         the entries of rank 1 and 2 there (the runner-up gives the margin)

With k = 2 every figure of a verdict (learned, token accuracy, first divergence, NLL, margin)
is exact; with k = 1 the margin of a learned sample could not be had. What cannot be had: a
sequence that fills vLLM's whole `max_model_len` (vLLM keeps room for one sampled token), which
`score` refuses with a message. Generation (unlearned samples only) is greedy decoding with
`temperature=0` that stops only at the pipeline's stop ids, as the hf backend does.

Parallelism is vLLM's own: `backend: {name: vllm, args: {tensor_parallel_size: 4, ...}}` in
ilp.yaml passes every arg through to `vllm.LLM`. A LoRA/PEFT adapter checkpoint runs as its base
model with `enable_lora=True` and one `LoRARequest` on every call.

vLLM is imported only when this backend is built; the environment it needs (`EngineEnvironment`)
is set just before and restored when the backend closes.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pytest_ilp.core.backends import (
    OPTIONAL_PACKAGES,
    BackendOptions,
    GenerateRequest,
    Progress,
    SampleRequest,
    ScoreRequest,
    TokenScores,
    check_backend_installed,
    until_stop,
)
from pytest_ilp.core.backends.devices import resolve_device, resolve_dtype
from pytest_ilp.core.checkpoint import CheckpointInfo, holds_tokenizer
from pytest_ilp.core.errors import IlpUsageError

#: requests per `LLM.generate` call while scoring: vLLM batches within a call; the chunks only
#: let the progress bar move.
SCORE_CHUNK = 512
#: the LoRA ranks vLLM accepts for `max_lora_rank`; an adapter's rank is rounded up to one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class EngineEnvironment:
    """The process environment the engine runs in, set before vllm is imported and undone after.

    Every variable is a default a user's own setting overrides. Caches, config and RPC sockets
    go to a temporary folder that `restore` removes, so nothing is left in the home folder or in
    /tmp. On CPU the engine runs in this process (no engine-core subprocess, which would need
    the caller under `if __name__ == "__main__":`), without torch.compile (20+ s cold for
    `prompt_logprobs`) and with a small KV cache (the default takes a share of all memory).
    """

    def __init__(self, cpu: bool) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pytest-ilp-vllm-"))
        # vLLM itself sets variables while it runs (VLLM_DIST_IDENT...): restore them all.
        self._saved = dict(os.environ)
        defaults = {
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            # Checkpoints are local folders: never ask the hub.
            "HF_HUB_OFFLINE": "1",
            "VLLM_LOGGING_LEVEL": "WARNING",
            "VLLM_CACHE_ROOT": str(self.folder / "cache"),
            "VLLM_CONFIG_ROOT": str(self.folder / "config"),
            "VLLM_RPC_BASE_PATH": str(self.folder),
            "TORCHINDUCTOR_CACHE_DIR": str(self.folder / "inductor"),
        }
        if cpu:
            defaults |= {
                "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                "TORCHDYNAMO_DISABLE": "1",
                "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB
            }
        for name, value in defaults.items():
            os.environ.setdefault(name, value)
        # The in-process CPU worker replaces torch.set_num_threads with a no-op for good.
        self._set_num_threads = torch.set_num_threads
        self._num_threads = torch.get_num_threads()

    def restore(self) -> None:
        for name in set(os.environ) - set(self._saved):
            del os.environ[name]
        os.environ.update(self._saved)
        torch.set_num_threads = self._set_num_threads
        torch.set_num_threads(self._num_threads)
        shutil.rmtree(self.folder, ignore_errors=True)


def engine_arguments(
    checkpoint: CheckpointInfo,
    options: BackendOptions,
    dtype: str,
    cpu: bool,
    known: Collection[str] = (),
) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM`: our defaults, then `options.args` over them.

    `known`: the fields of this vLLM's `EngineArgs`, for defaults that older versions lack.
    """
    arguments: dict[str, Any] = {
        "model": str(checkpoint.model_folder),
        "dtype": dtype,
        "seed": 0,
        "trust_remote_code": options.trust_remote_code,
        "use_tqdm_on_load": False,
    }
    if not holds_tokenizer(checkpoint.model_folder):
        # Prompts are token ids and nothing is detokenized, so which tokenizer vLLM loads does
        # not matter, but it needs one: an adapter's, when its base model was saved without.
        arguments["tokenizer"] = str(checkpoint.tokenizer_folder)
    if cpu:
        arguments["enforce_eager"] = True  # no graph capture or compilation on CPU
    if checkpoint.adapter is not None:
        rank = checkpoint.adapter_rank or VLLM_LORA_RANKS[-1]
        arguments |= {
            "enable_lora": True,
            "max_loras": 1,
            "max_lora_rank": next((r for r in VLLM_LORA_RANKS if r >= rank), rank),
        }
        targets = checkpoint.adapter.get("target_modules")
        if (
            "lora_target_modules" in known
            and isinstance(targets, list)
            and "lm_head" not in targets
        ):
            # LoRA layers only where the adapter has weights. This keeps lm_head a plain layer:
            # vLLM 0.32's CPU LoRA logits path fails on prompt_logprobs over several requests.
            arguments["lora_target_modules"] = sorted(targets)
    arguments.update(options.args)
    return arguments


def _import_vllm() -> Any:
    check_backend_installed("vllm")
    try:
        import vllm
    except ImportError as exc:  # installed, but broken (e.g. a CUDA torchvision beside it)
        raise IlpUsageError(
            f"vllm is installed but cannot be imported: {exc}; {OPTIONAL_PACKAGES['vllm'][1]}"
        ) from exc
    return vllm


class VLLMBackend:
    """One `vllm.LLM` engine for the session's scoring and generation."""

    def __init__(self, checkpoint: CheckpointInfo, options: BackendOptions) -> None:
        check_backend_installed("vllm")
        self.device = resolve_device(options.device)
        if self.device.startswith("cuda:"):
            raise IlpUsageError(
                f"--ilp-device={self.device}: vLLM picks its GPUs itself; set "
                "CUDA_VISIBLE_DEVICES (and tensor_parallel_size in backend args) instead"
            )
        if checkpoint.gguf_file is not None:
            raise IlpUsageError(
                f"{checkpoint.location} is a GGUF file: pytest-ilp runs GGUF checkpoints on the "
                "hf backend (--ilp-backend=hf), which de-quantizes them through transformers"
            )
        self.dtype = resolve_dtype(options.dtype, self.device, checkpoint)
        self.checkpoint = checkpoint
        self.environment: EngineEnvironment | None = EngineEnvironment(cpu=self.device == "cpu")
        self.llm: Any = None
        try:
            vllm = _import_vllm()
            self._check_platform()
            known = {f.name for f in dataclasses.fields(vllm.EngineArgs)}
            arguments = engine_arguments(
                checkpoint, options, self.dtype, self.device == "cpu", known
            )
            try:
                self.llm = vllm.LLM(**arguments)
            except Exception as exc:  # ValueError, RuntimeError... from engine start-up
                raise IlpUsageError(
                    f"vLLM could not start on {checkpoint.model_folder}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
            # vLLM keeps room for the one token it samples after a prompt.
            self.max_sequence_length: int | None = self.max_model_len - 1
            self.lora = None
            if checkpoint.adapter is not None:
                from vllm.lora.request import LoRARequest

                self.lora = LoRARequest("pytest-ilp-adapter", 1, str(checkpoint.folder))
        except BaseException:
            self.close()
            raise

    def _check_platform(self) -> None:
        """A vLLM build runs on one kind of device; say so rather than run somewhere else."""
        from vllm.platforms import current_platform

        built_for = "cpu" if current_platform.is_cpu() else "cuda"
        wanted = self.device.split(":")[0]
        if wanted != built_for:
            raise IlpUsageError(
                f"the installed vLLM runs on {built_for}, but the device here is {wanted}: "
                f"pass --ilp-device={built_for}, or install the vLLM build for {wanted}"
            )

    def close(self) -> None:
        """Shut the engine down, free its process group, restore the environment."""
        llm, self.llm = self.llm, None
        if llm is not None:
            # Ends the engine-core process where there is one (GPU); in-process, frees it.
            llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            # Without this a second engine in this process finds the old process group.
            cleanup_dist_env_and_memory()
        if self.environment is not None:
            self.environment.restore()
            self.environment = None

    # -- scoring -----------------------------------------------------------------------------

    def score(
        self, requests: Sequence[ScoreRequest], progress: Progress | None = None
    ) -> list[TokenScores]:
        from vllm import SamplingParams

        too_long = [r for r in requests if len(r.input_ids) >= self.max_model_len]
        if too_long:  # the pipeline keeps these out (`max_sequence_length`); a caller may not
            raise ValueError(
                f"{len(too_long)} request(s) do not fit vLLM's max_model_len of "
                f"{self.max_model_len} (one more token is needed)"
            )
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=2, detokenize=False)
        results: list[TokenScores] = []
        for start in range(0, len(requests), SCORE_CHUNK):
            chunk = requests[start : start + SCORE_CHUNK]
            outputs = self.llm.generate(
                [{"prompt_token_ids": list(r.input_ids)} for r in chunk],
                params,
                use_tqdm=False,
                lora_request=self.lora,
            )
            results.extend(
                token_scores(r, o.prompt_logprobs) for r, o in zip(chunk, outputs, strict=True)
            )
            if progress is not None:
                progress(len(chunk))
        return results

    # -- generation for failing samples -------------------------------------------------------

    def generate(self, requests: Sequence[GenerateRequest]) -> list[tuple[int, ...]]:
        """Greedy decoding; only the request's stop ids end it (the model's own EOS is among
        them, as the pipeline builds them), so vLLM and hf stop at the same tokens."""
        outputs = self._decode(requests, lambda request: {"temperature": 0.0})
        return [
            until_stop(list(outputs[i].outputs[0].token_ids), r.stop_ids) if i in outputs else ()
            for i, r in enumerate(requests)
        ]

    # -- sampling (the `sampled` criterion) ----------------------------------------------------

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[tuple[int, ...]]]:
        """`SamplingParams(n=..., seed=...)` per request: vLLM seeds each request's own
        generator, so its completions do not depend on what else is in the batch. The draws
        differ from the hf backend's (another sampler), hence the backend in the cache key."""
        outputs = self._decode(
            requests,
            lambda request: {
                "n": request.n,
                "temperature": request.temperature,
                "top_p": 1.0,
                "seed": request.seed,
            },
        )
        return [
            [until_stop(list(c.token_ids), r.stop_ids) for c in outputs[i].outputs]
            if i in outputs
            else [() for _ in range(r.n)]
            for i, r in enumerate(requests)
        ]

    def _decode(
        self,
        requests: Sequence[GenerateRequest | SampleRequest],
        sampling: Callable[[Any], dict[str, Any]],
    ) -> dict[int, Any]:
        """vLLM's outputs by request index, for the requests with room left in the context;
        `sampling` gives each request's own SamplingParams arguments. Every request stops only
        at its stop ids, within its token budget and the room left."""
        from vllm import SamplingParams

        prompts, params, indices = [], [], []
        for index, request in enumerate(requests):
            room = self.max_model_len - len(request.input_ids)
            if room <= 0:
                continue  # no room left in the context: nothing can be generated
            prompts.append({"prompt_token_ids": list(request.input_ids)})
            params.append(
                SamplingParams(
                    **sampling(request),
                    max_tokens=min(request.max_new_tokens, room),
                    stop_token_ids=sorted(request.stop_ids),
                    ignore_eos=True,
                    detokenize=False,
                )
            )
            indices.append(index)
        if not prompts:
            return {}
        outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora)
        return dict(zip(indices, outputs, strict=True))


def token_scores(request: ScoreRequest, prompt_logprobs: Sequence[Any]) -> TokenScores:
    """`TokenScores` of one request from vLLM's per-position `{token id: Logprob}` maps.

    vLLM builds each map from the actual token followed by the top-k (k = 2), so its last two
    entries are the top two (the actual token, when it is one of them, is merged into its
    entry); their `rank` (1, 2) orders them. The actual token is always present.
    """
    target_lp, top1_ids, top1_lp, top2_ids, top2_lp = [], [], [], [], []
    for t in range(request.target_start, len(request.input_ids)):
        position: Mapping[int, Any] = prompt_logprobs[t]
        target_lp.append(float(position[request.input_ids[t]].logprob))
        best, second = sorted(list(position.items())[-2:], key=lambda item: item[1].rank)
        top1_ids.append(int(best[0]))
        top1_lp.append(float(best[1].logprob))
        top2_ids.append(int(second[0]))
        top2_lp.append(float(second[1].logprob))
    return TokenScores(
        target_logprobs=tuple(target_lp),
        top1_ids=tuple(top1_ids),
        top1_logprobs=tuple(top1_lp),
        top2_ids=tuple(top2_ids),
        top2_logprobs=tuple(top2_lp),
    )
