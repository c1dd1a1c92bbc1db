"""Greedy continuations that resume from the teacher-forced pass's keys and values.

An unlearned sample is continued from its first divergence: the prompt, the target's tokens
before that position and the token predicted there. The pass has already computed the keys and
values of the prompt and of those target tokens, so re-running them (a prefill as long as the
sample up to its divergence) would repeat work: `RetainedCaches` keeps, per diverging row, its
keys and values cropped to that prefix, and `resume_greedy` decodes from them, one token per
step for all rows at once, dropping each row as it stops.

Rows are left-padded to a common length (the padded slots are masked out) and carry their own
position ids, the same arithmetic as a left-padded `generate`: its results equal greedy decoding
up to float rounding at exact ties, like any batched generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: the most bytes of keys and values kept for continuations (the rest are prefilled again).
RETAINED_CACHE_BYTES = 512 * 2**20

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [heads, length, dim]


class RetainedCaches:
    """Keys and values of sequence prefixes, by their token ids, within a byte budget."""

    def __init__(self, budget: int = RETAINED_CACHE_BYTES) -> None:
        self.budget = budget
        self.used = 0
        self._stored: dict[tuple[int, ...], Layers] = {}

    def offer(self, ids: tuple[int, ...], layers: Layers) -> None:
        """Keep `layers` (views into a batch's cache: they are copied) for the prefix `ids`."""
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if ids in self._stored or self.used + size > self.budget:
            return
        self._stored[ids] = [(k.clone(), v.clone()) for k, v in layers]
        self.used += size

    def get(self, ids: tuple[int, ...]) -> Layers | None:
        return self._stored.get(ids)

    def clear(self) -> None:
        self._stored.clear()
        self.used = 0


def retain_divergent_rows(
    retained: RetainedCaches,
    cache: Any,
    inputs: Sequence[tuple[tuple[int, ...], int]],
    top1: Sequence[int],
) -> None:
    """Offer each row's keys and values up to its first divergence.

    `cache` is the batch's cache (per layer [rows, heads, length, dim], sequence positions from
    0, a shared prefix included); `inputs` each row's (input_ids, target_start); `top1` the
    argmax at every target position, rows one after another.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer

    # Only a plain cache holds every position: a sliding-window layer keeps the last ones.
    if type(cache) is not DynamicCache or any(type(x) is not DynamicLayer for x in cache.layers):
        return
    start = 0
    for row, (ids, target_start) in enumerate(inputs):
        count = len(ids) - target_start
        predicted = top1[start : start + count]
        start += count
        position = next(
            (t for t, token in enumerate(predicted) if token != ids[target_start + t]), None
        )
        if position is None:
            continue
        length = target_start + position
        retained.offer(
            ids[:length],
            [
                (layer.keys[row, :, :length], layer.values[row, :, :length])
                for layer in cache.layers
            ],
        )


@dataclass(frozen=True)
class Resumed:
    """One continuation to decode: the prefix's keys and values, the token after them."""

    layers: Layers
    token: int
    max_new_tokens: int
    stop_ids: frozenset[int]


def resume_greedy(
    model: Any, rows: Sequence[Resumed], cache_argument: str
) -> list[tuple[int, ...]]:
    """Greedy tokens after each row's `token` (at most its budget, ending at a stop token)."""
    from transformers.cache_utils import DynamicCache

    device = rows[0].layers[0][0].device
    lengths = [row.layers[0][0].shape[1] for row in rows]
    width = max(lengths)
    layers = []
    for number in range(len(rows[0].layers)):
        keys, values = rows[0].layers[number]
        shape = (len(rows), keys.shape[0], width, keys.shape[2])
        padded_keys = keys.new_zeros(shape)
        padded_values = values.new_zeros(shape)
        for r, row in enumerate(rows):
            k, v = row.layers[number]
            padded_keys[r, :, width - k.shape[1] :] = k
            padded_values[r, :, width - v.shape[1] :] = v
        layers.append((padded_keys, padded_values))
    mask = torch.zeros((len(rows), width + 1), dtype=torch.long, device=device)
    for r, length in enumerate(lengths):
        mask[r, width - length :] = 1
    tokens = torch.tensor([[row.token] for row in rows], device=device)
    positions = torch.tensor([[length] for length in lengths], device=device)
    produced: list[list[int]] = [[] for _ in rows]
    live = list(range(len(rows)))  # indices into `rows` of the rows still decoding
    cache = DynamicCache(ddp_cache_data=layers)
    while live:
        output = model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{cache_argument: cache},
        )
        chosen = output.logits[:, -1].argmax(-1).tolist()
        keep = []
        for slot, (index, token) in enumerate(zip(live, chosen)):
            produced[index].append(token)
            request = rows[index]
            if token not in request.stop_ids and len(produced[index]) < request.max_new_tokens:
                keep.append(slot)
        cache = output_cache(output)
        if len(keep) < len(live):
            if not keep:
                break
            selected = torch.tensor(keep, device=device)
            cache = DynamicCache(
                ddp_cache_data=[
                    (layer.keys.index_select(0, selected), layer.values.index_select(0, selected))
                    for layer in cache.layers
                ]
            )
            mask = mask.index_select(0, selected)
            positions = positions.index_select(0, selected)
            live = [live[slot] for slot in keep]
            chosen = [chosen[slot] for slot in keep]
        tokens = torch.tensor([[token] for token in chosen], device=device)
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        positions = positions + 1
    return [tuple(tokens) for tokens in produced]


def output_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (a ModelOutput holds only the fields it set)."""
    return next((output[key] for key in ("cache", "past_key_values") if key in output), None)
