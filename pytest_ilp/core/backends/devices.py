"""Resolve `--ilp-device` and `--ilp-dtype` the same way for every backend.

torch is imported only where a GPU may exist: on a machine with no GPU device node `auto` is
`cpu` without importing torch, so a fully cached run stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.errors import IlpUsageError


def _gpu_possible() -> bool:
    if sys.platform != "linux":
        return True  # no cheap test elsewhere: ask torch
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


def _cuda_available() -> bool:
    if not _gpu_possible():
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if requested.startswith("cuda"):
        if not _cuda_available():
            raise IlpUsageError(
                f"--ilp-device={requested}: torch sees no CUDA device here; use cpu or auto"
            )
        import torch

        index = int(requested.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise IlpUsageError(
                f"--ilp-device={requested}: torch sees {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if requested == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise IlpUsageError(
                "--ilp-device=mps: torch sees no Apple MPS device here; use cpu or auto"
            )
    return requested


def resolve_dtype(requested: str, device: str, checkpoint: CheckpointInfo) -> str:
    """`auto`: float32 on CPU; on a GPU the dtype the checkpoint was saved in (bf16 if unsaid)."""
    if requested != "auto":
        return requested
    if device == "cpu":
        return "float32"
    saved = checkpoint.saved_dtype
    if saved in ("float32", "float16", "bfloat16"):
        return saved
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
