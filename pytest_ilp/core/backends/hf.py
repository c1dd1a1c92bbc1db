"""The transformers backend: teacher-forced scoring in token-budget batches, on CPU or GPU.

One forward pass per batch over `prompt + target` gives, at every target position, the
log-probability of the target token and the best two tokens of the model's distribution. Only
the positions that predict a target token go through the output layer (a pre-hook gathers their
hidden states, so a sample whose prompt is longer than its neighbours' costs no output-layer
work for it), and the full-vocabulary log-softmax is never materialised: a logsumexp, a top-2
and a gather give everything the verdict needs (`logits.target_figures`). Samples whose
prompts open with the same tokens (a chat system prompt) share one pass over that prefix: its
keys and values are computed once and each batch of them runs only its own tokens behind it.
The options of a multiple-choice sample (requests of one `group`) always share their prompt
this way: the prompts of many samples run in one pass, and their options in the next, each
behind its own prompt's keys and values. A diverging sample's keys and values up to its
divergence are kept for its continuation (`generate`, see `resume`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch

from pytest_ilp.core.backends import (
    BackendOptions,
    Progress,
    ScoreRequest,
    TokenScores,
)
from pytest_ilp.core.backends.devices import resolve_device, resolve_dtype
from pytest_ilp.core.backends.hf_decoding import Decoding, cache_argument, is_out_of_memory
from pytest_ilp.core.backends.loading import load_causal_lm
from pytest_ilp.core.backends.logits import target_figures
from pytest_ilp.core.backends.resume import RetainedCaches, output_cache, retain_divergent_rows
from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.errors import IlpUsageError

#: padded tokens per scoring batch unless --ilp-batch-tokens says otherwise. On a CPU a batch
#: whose activations stay in the last-level cache runs faster (the 30M benchmark model checks
#: 1,000 samples in 32 s with 1024 tokens, 45 s with 4096); a GPU wants large batches.
CPU_BATCH_TOKENS = 1024
GPU_BATCH_TOKENS = 4096
#: samples whose prompts start with the same tokens (a system prompt) share that prefix's
#: forward pass when it is at least this long and at least this many samples share it. A chat
#: template's system turn is often short (SmolLM2's default and a one-line one: 22-24 tokens,
#: over half of each prompt), and sharing even that saves more than it costs.
MIN_SHARED_PREFIX = 16
MIN_SHARING = 4
#: behind a shared prefix, a batch may hold this many times the token budget in keys/values.
PREFIX_MEMORY_FACTOR = 4


@dataclass(frozen=True)
class _Prefix:
    """Keys and values of a shared prompt prefix, per layer [1, heads, length, head_dim]."""

    length: int
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    def cache(self, batch: int) -> Any:
        """A fresh cache holding the prefix for each of `batch` rows (it grows per batch).

        The prefix is one row shared by all, or already one row per batch row."""
        from transformers.cache_utils import DynamicCache

        return DynamicCache(
            ddp_cache_data=[
                (k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self.layers
            ]
        )


def shared_prefix_groups(
    requests: Sequence[ScoreRequest],
) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Groups of requests that share a prompt prefix, as (prefix length, indices), and the
    indices of the rest.

    Sorted token sequences put sharers side by side. A group's prefix ends before the position
    that predicts the first target token of any member, so that position runs in each
    member's own pass. A request joins its neighbour's group as long as the tokens saved do
    not shrink (a far shorter common prefix starts a new group instead).
    """
    order = sorted(range(len(requests)), key=lambda i: requests[i].input_ids)
    groups: list[tuple[int, list[int]]] = []
    alone: list[int] = []

    def close(length: int, members: list[int]) -> None:
        if len(members) >= MIN_SHARING and length >= MIN_SHARED_PREFIX:
            groups.append((length, members))
        else:
            alone.extend(members)

    members: list[int] = []
    length = 0
    for index in order:
        ids = requests[index].input_ids
        if members:
            first = requests[members[0]].input_ids
            common = min(length, requests[index].target_start - 1)
            common = next((p for p in range(common) if ids[p] != first[p]), common)
            if common >= MIN_SHARED_PREFIX and (len(members) + 1) * common >= (
                len(members) * length
            ):
                members.append(index)
                length = common
                continue
            close(length, members)
        members, length = [index], requests[index].target_start - 1
    if members:
        close(length, members)
    return groups, alone


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
            prefix = self._prefix(requests[members[0]].input_ids[:length])
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
                layers = self._prefix_layers(ids)
                if layers is None:  # this model's cache cannot be shared: score in full
                    for members in chunk:
                        self._run(requests, members, None, results, progress)
                    return
                rows = [i for members in chunk for i in members]
                owner = torch.tensor(
                    [g for g, members in enumerate(chunk) for _ in members], device=self.device
                )
                prefix = _Prefix(
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

            self._halving_on_oom(self._group_batches(requests, bucket, length), score, too_large)

    def _group_batches(
        self, requests: Sequence[ScoreRequest], groups: list[list[int]], length: int
    ) -> list[list[int]]:
        """Batches of group indices, widest first: the options' own tokens within the token
        budget, and prompts plus options within the key/value memory budget."""
        own = [max(len(requests[i].input_ids) for i in m) - length for m in groups]
        order = sorted(range(len(groups)), key=lambda g: -own[g])
        batches: list[list[int]] = []
        rows = width = 0
        for g in order:
            more = len(groups[g])
            if (
                batches
                and (rows + more) * width <= self.batch_tokens
                and (rows + more) * (length + width) <= PREFIX_MEMORY_FACTOR * self.batch_tokens
            ):
                batches[-1].append(g)
                rows += more
            else:
                batches.append([g])
                rows, width = more, own[g]
        return batches

    def _prefix_layers(self, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Keys and values [rows, heads, length, head_dim] per layer of a batch of prompts of one
        length; None if the model's cache is not a plain per-layer one that can be shared."""
        from transformers.cache_utils import DynamicCache, DynamicLayer

        output = self.model(input_ids=ids.to(self.device), use_cache=True, logits_to_keep=1)
        cache = output_cache(output)
        if type(cache) is not DynamicCache or any(
            type(layer) is not DynamicLayer for layer in cache.layers
        ):
            return None
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _run(
        self,
        requests: Sequence[ScoreRequest],
        indices: Sequence[int],
        prefix: _Prefix | None,
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

        self._halving_on_oom(self._batches(requests, indices, prefix), score, too_large)

    def _batches(
        self, requests: Sequence[ScoreRequest], indices: Sequence[int], prefix: _Prefix | None
    ) -> list[list[int]]:
        """Longest first (out-of-memory shows at once), each batch within the token budget.

        Behind a shared prefix, a row costs its own tokens in compute but the prefix's too in
        key/value memory (every layer's, at once): both must fit the budget.
        """
        skip = prefix.length if prefix is not None else 0
        order = sorted(indices, key=lambda i: -len(requests[i].input_ids))
        batches: list[list[int]] = []
        width = 0
        for index in order:
            rows = len(batches[-1]) + 1 if batches else 0
            if (
                batches
                and rows * width <= self.batch_tokens
                and rows * (skip + width) <= (PREFIX_MEMORY_FACTOR * self.batch_tokens)
            ):
                batches[-1].append(index)
            else:
                batches.append([index])
                width = len(requests[index].input_ids) - skip
        return batches

    def _prefix(self, ids: Sequence[int]) -> _Prefix | None:
        """The keys and values of a shared prefix, computed once; None if the model's cache is
        not a plain per-layer one (sliding windows, recurrent state) that can be shared."""
        from transformers.cache_utils import DynamicCache, DynamicLayer

        try:
            output = self.model(
                input_ids=torch.tensor([list(ids)], device=self.device),
                use_cache=True,
                logits_to_keep=1,
            )
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            return None  # its samples are scored in full, in batches that halve on OOM
        cache = output_cache(output)
        if type(cache) is not DynamicCache or any(
            type(layer) is not DynamicLayer for layer in cache.layers
        ):
            return None
        return _Prefix(len(ids), [(layer.keys, layer.values) for layer in cache.layers])

    def _score_batch(
        self, requests: Sequence[ScoreRequest], prefix: _Prefix | None = None, retain: bool = False
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
        logits, cache = self._target_logits(
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

    def _target_logits(
        self,
        input_ids: torch.Tensor,
        attention: torch.Tensor,
        rows: torch.Tensor,
        columns: torch.Tensor,
        past: Any = None,
        keep_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """Float logits [targets, vocab] at the (row, column) positions only, and the batch's
        KV cache if `keep_cache` (else None).

        The output layer is the largest matmul of a model with a realistic vocabulary, and most
        positions are prompt: a pre-hook hands it the hidden states of the target positions
        alone, as one [1, targets, hidden] sequence. Whatever the model does to its logits after
        the output layer (soft-capping, scaling) is elementwise and still applies. A model whose
        output layer sees other shapes (or that has none to hook) gets its logits computed for
        every position and gathered afterwards.
        """
        batch, width = input_ids.shape
        head = self.model.get_output_embeddings()
        gathered = False

        def only_targets(module: Any, inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
            nonlocal gathered
            hidden = inputs[0] if inputs else None
            if not isinstance(hidden, torch.Tensor) or gathered:
                return None
            if tuple(hidden.shape[:2]) != (batch, width):
                return None
            gathered = True
            return (hidden[rows, columns].unsqueeze(0), *inputs[1:])  # [1, targets, hidden]

        hook = head.register_forward_pre_hook(only_targets) if head is not None else None
        try:
            output = self.model(
                input_ids=input_ids,
                attention_mask=attention,
                use_cache=past is not None or keep_cache,
                **{cache_argument(self.model): past},
            )
        finally:
            if hook is not None:
                hook.remove()
        logits: torch.Tensor = output.logits
        cache = output_cache(output) if keep_cache else None
        if not gathered:
            return logits[rows, columns].float(), cache
        if logits.shape[:2] != (1, len(rows)):
            raise RuntimeError(
                f"{type(self.model).__name__} reshaped its output layer's result to "
                f"{tuple(logits.shape)}; pytest-ilp's hf backend cannot score this model"
            )
        return logits[0].float(), cache
