"""Loading a checkpoint folder as a transformers causal LM, with errors a person can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from pytest_ilp.backends import BackendOptions
from pytest_ilp.checkpoint import CheckpointInfo


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" progress bar in the middle of pytest's output."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_causal_lm(checkpoint: CheckpointInfo, options: BackendOptions, dtype: str) -> Any:
    """`AutoModelForCausalLM.from_pretrained` on the folder, in `dtype`, in eval mode."""
    try:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(
                checkpoint.folder,
                dtype=getattr(torch, dtype),
                trust_remote_code=options.trust_remote_code,
                **options.args,
            )
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError...
        raise pytest.UsageError(
            f"transformers could not load a causal language model from {checkpoint.folder}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return model.eval()
