"""The transformers backend: teacher-forced scoring in token-budget batches, on CPU or GPU.

One forward pass per batch over `prompt + target` gives, at every target position, the
log-probability of the target token and the best two tokens of the model's distribution. Only
the positions that predict a target token go through the output layer (a pre-hook gathers their
hidden states, so a sample whose prompt is longer than its neighbours' costs no output-layer
work for it), and the full-vocabulary log-softmax is never materialised: a logsumexp, a top-2
and a gather give everything the verdict needs (`logits`). Samples whose
prompts open with the same tokens (a chat system prompt) share one pass over that prefix: its
keys and values are computed once and each batch of them runs only its own tokens behind it
(`hf_prefix`). The options of a multiple-choice sample (requests of one `group`) always share
their prompt this way: the prompts of many samples run in one pass, and their options in the
next, each behind its own prompt's keys and values. A diverging sample's keys and values up to its
divergence are kept for its continuation (`generate`, see `resume`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from pytest_ilp.core.backends import (
    BackendOptions,
    Progress,
    ScoreRequest,
    TokenScores,
)
from pytest_ilp.core.backends.devices import resolve_device, resolve_dtype
from pytest_ilp.core.backends.hf_decoding import Decoding, is_out_of_memory
from pytest_ilp.core.backends.hf_prefix import (
    Prefix,
    group_batches,
    prefix_batches,
    prefix_layers,
    shared_prefix,
    shared_prefix_groups,
)
from pytest_ilp.core.backends.loading import load_causal_lm
from pytest_ilp.core.backends.logits import target_figures, target_logits
from pytest_ilp.core.backends.resume import RetainedCaches, retain_divergent_rows
from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.errors import IlpUsageError

#: padded tokens per scoring batch unless --ilp-batch-tokens says otherwise. On a CPU a batch
#: whose activations stay in the last-level cache runs faster (the 30M benchmark model checks
#: 1,000 samples in 32 s with 1024 tokens, 45 s with 4096); a GPU wants large batches.
CPU_BATCH_TOKENS = 1024
GPU_BATCH_TOKENS = 4096


class HFBackend(Decoding):
    """`AutoModelForCausalLM.from_pretrained` on the checkpoint folder."""

    def __init__(self, checkpoint: CheckpointInfo, options: BackendOptions) -> None:
        device = resolve_device(options.device)
        dtype = resolve_dtype(options.dtype, device, checkpoint)
        model = load_causal_lm(checkpoint, options, dtype)
        try:
            model = model.to(device)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            raise IlpUsageError(
                f"{checkpoint.model_folder} does not fit on {device} in {dtype}: "
                "free the device, use one with more memory, or a smaller --ilp-dtype"
            ) from None
        self._use(model, device, dtype, options)

    @classmethod
    def in_memory(cls, model: Any, options: BackendOptions) -> HFBackend:
        """Score a model already in memory, on its own device and in its own dtype (a training
        run's: the caller switches it to eval mode and back)."""
        backend = cls.__new__(cls)
        parameter = next(model.parameters())
        dtype = str(parameter.dtype).removeprefix("torch.")
        backend._use(model, str(parameter.device), dtype, options)
        return backend

    def _use(self, model: Any, device: str, dtype: str, options: BackendOptions) -> None:
        self.device = device
        self.dtype = dtype
        self.batch_tokens = options.batch_tokens or (
            CPU_BATCH_TOKENS if device == "cpu" else GPU_BATCH_TOKENS
        )
        self.max_sequence_length: int | None = None  # the checkpoint's context, checked at render
        self.model: Any = model
        config = model.config
        self.pad_id = int(config.pad_token_id if config.pad_token_id is not None else 0)
        #: each diverging sample's keys and values up to its divergence, from the pass, so that
        #: its continuation (`generate`) does not run the prompt and the target again.
        self.retained = RetainedCaches()

    def close(self) -> None:
        self.retained.clear()
        del self.model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # -- scoring -----------------------------------------------------------------------------

    @torch.inference_mode()
    def score(
        self, requests: Sequence[ScoreRequest], progress: Progress | None = None
    ) -> list[TokenScores]:
        results: list[TokenScores | None] = [None] * len(requests)
        options: dict[int, list[int]] = {}
        for index, request in enumerate(requests):
            if request.group is not None:
                options.setdefault(request.group, []).append(index)
        ungrouped = [r for r in requests if r.group is None]
        if options:
            self._score_option_groups(requests, list(options.values()), results, progress)
            if not ungrouped:
                return cast(list[TokenScores], results)
        positions = [i for i, r in enumerate(requests) if r.group is None]
        groups, alone = shared_prefix_groups(ungrouped)
        groups = [(length, [positions[i] for i in members]) for length, members in groups]
        alone = [positions[i] for i in alone]
        for length, members in groups:
            prefix = shared_prefix(self.model, requests[members[0]].input_ids[:length], self.device)
            if prefix is None:  # this model's cache cannot be shared: score them in full
                alone.extend(members)
                continue
            self._run(requests, members, prefix, results, progress)
            del prefix
        self._run(requests, alone, None, results, progress)
        return cast(list[TokenScores], results)  # every index was filled above

    def _score_option_groups(
        self,
        requests: Sequence[ScoreRequest],
        groups: list[list[int]],
        results: list[TokenScores | None],
        progress: Progress | None,
    ) -> None:
        """Score groups of requests that share a prompt (the options of a multiple-choice
        sample): the shared prompts of a batch of groups run in one pass (they are batched by
        length, so no padding shifts positions), then all their options in one more, each row
        behind its own group's keys and values."""
        by_length: dict[int, list[list[int]]] = {}
        for members in groups:
            first = requests[members[0]].input_ids
            length = min(requests[i].target_start for i in members) - 1
            for i in members[1:]:
                ids = requests[i].input_ids
                length = next((p for p in range(length) if ids[p] != first[p]), length)
            if length < 1:  # nothing shared: score them as they are
                self._run(requests, members, None, results, progress)
                continue
            by_length.setdefault(length, []).append(members)
        for length, bucket in by_length.items():

            def score(chosen: list[int], length: int = length, bucket: Any = bucket) -> None:
                chunk = [bucket[g] for g in chosen]
                ids = torch.tensor([list(requests[m[0]].input_ids[:length]) for m in chunk])
                layers = prefix_layers(self.model, ids.to(self.device))
                if layers is None:  # this model's cache cannot be shared: score in full
                    for members in chunk:
                        self._run(requests, members, None, results, progress)
                    return
                rows = [i for members in chunk for i in members]
                owner = torch.tensor(
                    [g for g, members in enumerate(chunk) for _ in members], device=self.device
                )
                prefix = Prefix(
                    length,
                    [(k.index_select(0, owner), v.index_select(0, owner)) for k, v in layers],
                )
                scored = self._score_batch([requests[i] for i in rows], prefix)
                for index, scores in zip(rows, scored):
                    results[index] = scores
                if progress is not None:
                    progress(len(rows))

            def too_large(group: int, bucket: Any = bucket) -> str:
                members = bucket[group]
                return (
                    f"out of memory scoring the {len(members)} options of one multiple-choice "
                    f"sample ({max(len(requests[i].input_ids) for i in members)} tokens); use a "
                    "device with more memory or --ilp-dtype=bfloat16"
                )

            batches = group_batches(requests, bucket, length, self.batch_tokens)
            self._halving_on_oom(batches, score, too_large)

    def _run(
        self,
        requests: Sequence[ScoreRequest],
        indices: Sequence[int],
        prefix: Prefix | None,
        results: list[TokenScores | None],
        progress: Progress | None,
    ) -> None:
        def score(batch: list[int]) -> None:
            scored = self._score_batch([requests[i] for i in batch], prefix, retain=True)
            for index, scores in zip(batch, scored):
                results[index] = scores
            if progress is not None:
                progress(len(batch))

        def too_large(index: int) -> str:
            return (
                f"out of memory scoring one sequence of {len(requests[index].input_ids)} tokens; "
                "use a device with more memory or --ilp-dtype=bfloat16"
            )

        skip = prefix.length if prefix is not None else 0
        batches = prefix_batches(requests, indices, skip, self.batch_tokens)
        self._halving_on_oom(batches, score, too_large)

    def _score_batch(
        self, requests: Sequence[ScoreRequest], prefix: Prefix | None = None, retain: bool = False
    ) -> list[TokenScores]:
        """The figures of each request; `retain`: keep each diverging row's keys and values up
        to its first divergence (`self.retained`), where its continuation will start."""
        skip = prefix.length if prefix is not None else 0
        width = max(len(r.input_ids) for r in requests) - skip
        input_ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(requests), skip + width), dtype=torch.long)
        attention[:, :skip] = 1
        for row, request in enumerate(requests):
            own = len(request.input_ids) - skip
            input_ids[row, :own] = torch.tensor(request.input_ids[skip:])
            attention[row, : skip + own] = 1
        # Position p predicts token p + 1: the positions that predict a target token, as
        # flat (row, column) pairs over the batch (columns after the prefix), and the tokens
        # they must predict.
        rows = torch.cat(
            [
                torch.full((len(r.input_ids) - r.target_start,), row, dtype=torch.long)
                for row, r in enumerate(requests)
            ]
        )
        columns = torch.cat(
            [torch.arange(r.target_start - 1, len(r.input_ids) - 1) - skip for r in requests]
        )
        next_tokens = torch.tensor(
            [t for r in requests for t in r.input_ids[r.target_start :]], device=self.device
        )  # [targets]
        logits, cache = target_logits(
            self.model,
            input_ids.to(self.device),
            attention.to(self.device),
            rows.to(self.device),
            columns.to(self.device),
            prefix.cache(len(requests)) if prefix is not None else None,
            keep_cache=retain,
        )  # [targets, vocab]
        target_lp, top_lp, top_id = target_figures(logits, next_tokens)
        del logits
        if retain:
            retain_divergent_rows(
                self.retained,
                cache,
                [(r.input_ids, r.target_start) for r in requests],
                [t[0] for t in top_id],
            )
        del cache
        scores = []
        start = 0
        for request in requests:
            span = slice(start, start + len(request.input_ids) - request.target_start)
            start = span.stop
            tops, top_values = top_id[span], top_lp[span]
            scores.append(
                TokenScores(
                    target_logprobs=tuple(target_lp[span]),
                    top1_ids=tuple(t[0] for t in tops),
                    top1_logprobs=tuple(v[0] for v in top_values),
                    top2_ids=tuple(t[1] for t in tops),
                    top2_logprobs=tuple(v[1] for v in top_values),
                )
            )
        return scores
