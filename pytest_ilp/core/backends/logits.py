"""The figures a verdict needs from the output layer's logits, without a full log-softmax.

At each target position: the target token's log-probability and the best two tokens with
theirs. A logsumexp, a top-2 and a gather give them; over a realistic vocabulary (49k entries
times hundreds of positions, hundreds of MiB in float32) each of those is a pass through main
memory, so they run on slices of positions small enough to stay in the CPU's cache.
"""

from __future__ import annotations

import torch

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
