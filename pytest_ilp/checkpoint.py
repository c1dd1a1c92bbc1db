"""What pytest-ilp needs to know about a checkpoint folder, read from its JSON files.

No torch or transformers here: the folder is validated when pytest starts, long before a model
is loaded, so that a typo in `--ilp-checkpoint` fails in a second with a clear message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Config fields that different architectures use for their context length.
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class CheckpointInfo:
    """A validated checkpoint folder (one that holds config.json)."""

    folder: Path
    config: Mapping[str, Any]

    @property
    def max_length(self) -> int | None:
        """The longest sequence the model accepts, or None when the config does not say."""
        for name in CONTEXT_FIELDS:
            value = self.config.get(name)
            if isinstance(value, int) and value > 0:
                return value
        text = self.config.get("text_config")
        if isinstance(text, Mapping):
            return CheckpointInfo(self.folder, text).max_length
        return None

    @property
    def saved_dtype(self) -> str | None:
        value = self.config.get("dtype") or self.config.get("torch_dtype")
        return value if isinstance(value, str) else None

    def generation_stop_ids(self) -> set[int]:
        """EOS ids from generation_config.json (a chat model often lists several)."""
        ids: set[int] = set()
        for source in (self.config, _read_json(self.folder / "generation_config.json") or {}):
            value = source.get("eos_token_id")
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(v for v in value if isinstance(v, int))
        return ids


def inspect_checkpoint(folder: Path, what: str = "--ilp-checkpoint") -> CheckpointInfo:
    """Validate a checkpoint folder; raise `pytest.UsageError` saying what is wrong."""
    if not folder.exists():
        raise pytest.UsageError(
            f"{what}: {folder} does not exist; point it at a folder written by save_pretrained"
        )
    if not folder.is_dir():
        raise pytest.UsageError(
            f"{what}: {folder} is a file; point it at the folder that holds config.json"
        )
    config = _read_json(folder / "config.json")
    if config is not None:
        return CheckpointInfo(folder, config)
    nested = sorted(p.parent.name for p in folder.glob("*/config.json"))
    hint = f" (sub-folders with one: {', '.join(nested[:5])})" if nested else ""
    raise pytest.UsageError(
        f"{what}: {folder} holds no config.json{hint}; "
        "point it at a folder written by save_pretrained"
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise pytest.UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise pytest.UsageError(f"{path}: expected a JSON object")
    return data
