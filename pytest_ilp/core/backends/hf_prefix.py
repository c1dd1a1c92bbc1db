"""The hf backend's shared prompt prefixes and its batches within the token budget.

Samples whose prompts open with the same tokens (a chat system prompt) share one pass over that
prefix: its keys and values are computed once (`shared_prefix`) and each batch of its samples
runs only its own tokens behind them (`Prefix.cache`). The options of a multiple-choice sample
share their prompt the same way (`prefix_layers` runs the prompts of many samples at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pytest_ilp.core.backends import ScoreRequest
from pytest_ilp.core.backends.hf_decoding import is_out_of_memory
from pytest_ilp.core.backends.resume import output_cache

#: samples whose prompts start with the same tokens (a system prompt) share that prefix's
#: forward pass when it is at least this long and at least this many samples share it. A chat
#: template's system turn is often short (SmolLM2's default and a one-line one: 22-24 tokens,
#: over half of each prompt), and sharing even that saves more than it costs.
MIN_SHARED_PREFIX = 16
MIN_SHARING = 4
#: behind a shared prefix, a batch may hold this many times the token budget in keys/values.
PREFIX_MEMORY_FACTOR = 4


@dataclass(frozen=True)
class Prefix:
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


def prefix_layers(model: Any, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Keys and values [rows, heads, length, head_dim] per layer of a batch of prompts of one
    length (`ids` on the model's device); None if the model's cache is not a plain per-layer
    one (sliding windows, recurrent state) that can be shared."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    cache = output_cache(model(input_ids=ids, use_cache=True, logits_to_keep=1))
    if type(cache) is not DynamicCache or any(
        type(layer) is not DynamicLayer for layer in cache.layers
    ):
        return None
    return [(layer.keys, layer.values) for layer in cache.layers]


def shared_prefix(model: Any, ids: Sequence[int], device: str) -> Prefix | None:
    """The keys and values of a shared prefix, computed once; None if they cannot be shared
    (see `prefix_layers`) or do not fit in memory."""
    try:
        layers = prefix_layers(model, torch.tensor([list(ids)], device=device))
    except (RuntimeError, torch.OutOfMemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        return None  # its samples are scored in full, in batches that halve on OOM
    return None if layers is None else Prefix(len(ids), layers)


def prefix_batches(
    requests: Sequence[ScoreRequest], indices: Sequence[int], skip: int, batch_tokens: int
) -> list[list[int]]:
    """Longest first (out-of-memory shows at once), each batch within the token budget.

    Behind a shared prefix of `skip` tokens, a row costs its own tokens in compute but the
    prefix's too in key/value memory (every layer's, at once): both must fit the budget.
    """
    order = sorted(indices, key=lambda i: -len(requests[i].input_ids))
    batches: list[list[int]] = []
    width = 0
    for index in order:
        rows = len(batches[-1]) + 1 if batches else 0
        if (
            batches
            and rows * width <= batch_tokens
            and rows * (skip + width) <= (PREFIX_MEMORY_FACTOR * batch_tokens)
        ):
            batches[-1].append(index)
        else:
            batches.append([index])
            width = len(requests[index].input_ids) - skip
    return batches


def group_batches(
    requests: Sequence[ScoreRequest], groups: list[list[int]], length: int, batch_tokens: int
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
            and (rows + more) * width <= batch_tokens
            and (rows + more) * (length + width) <= PREFIX_MEMORY_FACTOR * batch_tokens
        ):
            batches[-1].append(g)
            rows += more
        else:
            batches.append([g])
            rows, width = more, own[g]
    return batches
