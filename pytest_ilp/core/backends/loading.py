"""Loading a checkpoint folder as a transformers causal LM, with errors a person can act on.

A LoRA/PEFT adapter checkpoint is loaded on its base model with peft and merged into it, so the
backend runs one plain model: merged weights give the same logits as the adapter layers (up to
float rounding) and cost nothing extra per forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from pytest_ilp.core.backends import BackendOptions
from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.errors import IlpUsageError


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" or "Writing model shards" bar of transformers in the middle of
    pytest's output: pytest-ilp shows its own progress."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_causal_lm(checkpoint: CheckpointInfo, options: BackendOptions, dtype: str) -> Any:
    """`AutoModelForCausalLM.from_pretrained` on the folder, in `dtype`, in eval mode.

    For an adapter checkpoint: the base model, with the adapter applied and merged. A GGUF
    checkpoint is de-quantized by transformers (float32 unless `dtype` says otherwise).
    """
    folder = checkpoint.model_folder
    try:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(
                folder,
                dtype=getattr(torch, dtype),
                trust_remote_code=options.trust_remote_code,
                **checkpoint.load_arguments(),
                **options.args,
            )
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError...
        raise IlpUsageError(
            f"transformers could not load a causal language model from {checkpoint.location}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if checkpoint.adapter is not None:
        model = _apply_adapter(model, checkpoint)
    return model.eval()


def _apply_adapter(model: Any, checkpoint: CheckpointInfo) -> Any:
    try:
        from peft import PeftModel
    except ImportError:
        raise IlpUsageError(
            f"{checkpoint.folder} is a PEFT adapter and loading it needs peft: pip install peft"
        ) from None
    try:
        with quiet_loading():
            adapted = PeftModel.from_pretrained(model, checkpoint.folder, is_trainable=False)
        return adapted.merge_and_unload()
    except Exception as exc:  # peft raises ValueError, KeyError, RuntimeError (shape mismatch)...
        raise IlpUsageError(
            f"peft could not apply the adapter {checkpoint.folder} to its base model "
            f"{checkpoint.model_folder}: {type(exc).__name__}: {exc}"
        ) from exc
