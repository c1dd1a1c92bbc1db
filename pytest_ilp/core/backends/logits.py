"""The figures a verdict needs from the output layer's logits, without a full log-softmax.

The output layer runs at the target positions only (`target_logits`). At each target position:
the target token's log-probability and the best two tokens with theirs. A logsumexp, a top-2
and a gather give them; over a realistic vocabulary (49k entries times hundreds of positions,
hundreds of MiB in float32) each of those is a pass through main memory, so they run on slices
of positions small enough to stay in the CPU's cache.
"""

from __future__ import annotations

from typing import Any

import torch

from pytest_ilp.core.backends.hf_decoding import cache_argument
from pytest_ilp.core.backends.resume import output_cache

#: positions reduced together: 32 x 49,152 float32 logits are 6 MiB.
ROWS = 32


def target_figures(
    logits: torch.Tensor, next_tokens: torch.Tensor
) -> tuple[list[float], list[list[float]], list[list[int]]]:
    """Per position (`logits` [positions, vocab] float, `next_tokens` [positions]): the target
    token's log-probability, the top-2 log-probabilities and the top-2 token ids."""
    target: list[torch.Tensor] = []
    top: list[torch.Tensor] = []
    ids: list[torch.Tensor] = []
    for start in range(0, logits.shape[0], ROWS):
        chunk = logits[start : start + ROWS]  # [rows, vocab]
        best, best_ids = chunk.topk(2, dim=-1)  # [rows, 2]
        # logsumexp as torch computes it (max + log of the shifted exponentials' sum), in a
        # temporary the size of the chunk.
        log_z = (chunk - best[:, :1]).exp_().sum(-1).log_().add_(best[:, 0])  # [rows]
        picked = chunk.gather(-1, next_tokens[start : start + ROWS].unsqueeze(-1)).squeeze(-1)
        target.append(picked - log_z)
        top.append(best - log_z.unsqueeze(-1))
        ids.append(best_ids)
    if not target:
        return [], [], []
    return torch.cat(target).tolist(), torch.cat(top).tolist(), torch.cat(ids).tolist()


def target_logits(
    model: Any,
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
    head = model.get_output_embeddings()
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
        output = model(
            input_ids=input_ids,
            attention_mask=attention,
            use_cache=past is not None or keep_cache,
            **{cache_argument(model): past},
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
            f"{type(model).__name__} reshaped its output layer's result to "
            f"{tuple(logits.shape)}; pytest-ilp's hf backend cannot score this model"
        )
    return logits[0].float(), cache
