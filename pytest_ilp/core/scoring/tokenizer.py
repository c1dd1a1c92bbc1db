"""The tokenizer that renders the samples, and the checks that a checkpoint reads its ids as
the same tokens."""

from __future__ import annotations

from typing import Any

from pytest_ilp.core.checkpoint import CheckpointInfo
from pytest_ilp.core.errors import IlpUsageError
from pytest_ilp.core.render import Rendered
from pytest_ilp.core.scoring.job import IncompatibleTokenizer, Job


def load_tokenizer(checkpoint: CheckpointInfo, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    folder = checkpoint.tokenizer_folder  # an adapter's own, else its base model's
    try:
        return AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, **checkpoint.load_arguments()
        )
    except Exception as exc:  # OSError, ValueError... from transformers
        raise IlpUsageError(
            f"transformers could not load a tokenizer from {folder}: "
            f"{type(exc).__name__}: {exc}; save one with tokenizer.save_pretrained(...)"
        ) from exc


def check_same_tokenizer(renderer: Any, own: Any, job: Job) -> None:
    """The other checkpoint must read the rendered ids as the same tokens (it may know fewer)."""
    rendering = renderer.get_vocab()
    differing = [t for t, i in own.get_vocab().items() if rendering.get(t, i) != i]
    if differing:
        raise IncompatibleTokenizer(
            f"{job.checkpoint.folder} has another tokenizer than {job.renderer.folder} "
            f"({len(differing)} tokens have other ids, e.g. {differing[0]!r})"
        )


def vocabulary_problem(rendered: Rendered, job: Job) -> str | None:
    vocab = job.checkpoint.config.get("vocab_size")
    if not isinstance(vocab, int):
        return None
    largest = max(rendered.input_ids)
    if largest < vocab:
        return None
    if not job.is_renderer:
        return f"uses token id {largest}, which {job.checkpoint.name} has no embedding for"
    raise IlpUsageError(
        f"{job.checkpoint.folder}: the tokenizer produced token id {largest} but the model's "
        f"vocabulary has {vocab} entries: the tokenizer and the weights do not belong "
        "together (save the tokenizer the model was trained with into the checkpoint)"
    )
