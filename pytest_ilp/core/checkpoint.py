"""What pytest-ilp needs to know about a checkpoint folder, read from its JSON files.

No torch or transformers here: the folder is validated when pytest starts, long before a model
is loaded, so that a typo in `--ilp-checkpoint` fails in a second with a clear message.

A checkpoint is either a full model (a folder with config.json) or a LoRA/PEFT adapter (a folder
with adapter_config.json) together with the base model it applies to. For an adapter, the
config, context length, vocabulary and stop ids are the base model's; the tokenizer is the
adapter folder's when it holds one (a fine-tune may add tokens), else the base's.

A GGUF file (the quantized format of llama.cpp and Ollama), given as the file or as a folder
holding exactly one `.gguf` and no config.json, is a full model too: transformers loads it with
`gguf_file=` (de-quantizing the weights) and reads its tokenizer and chat template from it. Its
header is read here, without the `gguf` package, for the context length, vocabulary and EOS id.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ilp.core.errors import IlpUsageError

# Config fields that different architectures use for their context length.
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
ADAPTER_CONFIG = "adapter_config.json"
# Any of these makes a folder a tokenizer folder for `AutoTokenizer.from_pretrained`.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class CheckpointInfo:
    """A validated checkpoint folder: a full model, or an adapter on its base model."""

    folder: Path
    #: config.json of the model that runs: the checkpoint's own, or the adapter's base model's.
    config: Mapping[str, Any]
    #: adapter_config.json of a LoRA/PEFT adapter checkpoint; None for a full model.
    adapter: Mapping[str, Any] | None = None
    #: the model folder an adapter applies to; None for a full model.
    base_folder: Path | None = None
    #: the generation config of a model in memory (a training run's, see `in_memory`); None:
    #: read generation_config.json from the folder.
    generation_config: Mapping[str, Any] | None = None
    #: the name of the GGUF file in `folder` that holds the whole model; None for a folder
    #: written by save_pretrained.
    gguf_file: str | None = None

    @property
    def name(self) -> str:
        """What to call the checkpoint in messages: the folder's name, or the GGUF file's."""
        return self.gguf_file or self.folder.name

    @property
    def location(self) -> Path:
        """The path the user gave: the folder, or the GGUF file."""
        return self.folder / self.gguf_file if self.gguf_file else self.folder

    def load_arguments(self) -> dict[str, str]:
        """Extra keyword arguments of transformers' `from_pretrained` for this checkpoint."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    @property
    def model_folder(self) -> Path:
        """The folder holding config.json and the full weights (the base, for an adapter)."""
        return self.base_folder or self.folder

    @property
    def tokenizer_folder(self) -> Path:
        """The adapter folder when it holds a tokenizer, else the model folder."""
        if self.adapter is not None and holds_tokenizer(self.folder):
            return self.folder
        return self.model_folder

    @property
    def adapter_rank(self) -> int | None:
        """The largest LoRA rank of the adapter (`r`, or a larger one in `rank_pattern`)."""
        if self.adapter is None:
            return None
        ranks = [self.adapter.get("r")]
        pattern = self.adapter.get("rank_pattern")
        if isinstance(pattern, Mapping):
            ranks.extend(pattern.values())
        return max((r for r in ranks if isinstance(r, int)), default=None)

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
        """EOS ids from config.json and generation_config.json (a chat model often lists several).

        For an adapter, a generation_config.json saved beside it counts as well as the base's.
        """
        ids: set[int] = set()
        sources = [self.config]
        if self.generation_config is not None:
            sources.append(self.generation_config)
        else:
            for folder in dict.fromkeys((self.folder, self.model_folder)):
                sources.append(_read_json(folder / "generation_config.json") or {})
        for source in sources:
            value = source.get("eos_token_id")
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(v for v in value if isinstance(v, int))
        return ids


def in_memory(model: Any, folder: Path) -> CheckpointInfo:
    """A transformers model in memory, described as `save_pretrained` would save it into
    `folder` (its config.json and generation_config.json), without saving anything."""
    generation = getattr(model, "generation_config", None)
    return CheckpointInfo(
        folder,
        model.config.to_dict(),
        generation_config=generation.to_dict() if generation is not None else {},
    )


def holds_tokenizer(folder: Path) -> bool:
    """Whether `AutoTokenizer.from_pretrained(folder)` has files to read."""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def inspect_checkpoint(
    folder: Path, what: str = "--ilp-checkpoint", adapter_base: Path | None = None
) -> CheckpointInfo:
    """Validate a checkpoint folder; raise `IlpUsageError` saying what is wrong.

    `adapter_base` overrides the base model named in an adapter's adapter_config.json.
    """
    if not folder.exists():
        raise IlpUsageError(
            f"{what}: {folder} does not exist; point it at a folder written by save_pretrained"
        )
    if folder.is_file() and folder.suffix == ".gguf":
        return _gguf_checkpoint(folder, what)
    if not folder.is_dir():
        raise IlpUsageError(
            f"{what}: {folder} is a file; point it at the folder that holds config.json "
            "(or at a .gguf file)"
        )
    # An adapter folder may also carry a copy of the base's config.json (some trainers save
    # one); the adapter config decides, as it does for transformers' own PEFT integration.
    adapter = _read_json(folder / ADAPTER_CONFIG)
    if adapter is not None:
        base = _adapter_base(folder, adapter, adapter_base, what)
        if (base / ADAPTER_CONFIG).is_file():
            raise IlpUsageError(
                f"{what}: the base model of adapter {folder}, {base}, is itself an adapter; "
                "merge it first (PeftModel.merge_and_unload) and point --ilp-adapter-base at it"
            )
        base_info = inspect_checkpoint(base, f"the base model of adapter {folder}")
        return CheckpointInfo(folder, base_info.config, adapter=adapter, base_folder=base)
    config = _read_json(folder / "config.json")
    if config is not None:
        _check_context_length(folder / "config.json", config)
        return CheckpointInfo(folder, config)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return _gguf_checkpoint(ggufs[0], what)
    if ggufs:
        raise IlpUsageError(
            f"{what}: {folder} holds {len(ggufs)} .gguf files "
            f"({', '.join(p.name for p in ggufs[:5])}); point it at one of them"
        )
    nested = sorted(p.parent.name for p in folder.glob("*/config.json"))
    hint = f" (sub-folders with one: {', '.join(nested[:5])})" if nested else ""
    raise IlpUsageError(
        f"{what}: {folder} holds no config.json{hint}; "
        "point it at a folder written by save_pretrained"
    )


def _check_context_length(path: Path, config: Mapping[str, Any]) -> None:
    """A context length that is not a positive integer ("128" as a string) would otherwise
    surface as a confusing error from deep inside transformers or the tokenizer."""
    for section in (config, config.get("text_config")):
        if not isinstance(section, Mapping):
            continue
        for name in CONTEXT_FIELDS:
            value = section.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise IlpUsageError(
                    f"{path}: `{name}` must be a positive integer, got {value!r}; "
                    "fix config.json (save_pretrained writes it as a number)"
                )


def _adapter_base(
    folder: Path, adapter: Mapping[str, Any], override: Path | None, what: str
) -> Path:
    """The base model folder: the override, else `base_model_name_or_path` as a local folder.

    A relative path in the adapter config is taken relative to the adapter folder, so that an
    adapter saved next to its base keeps working when both are moved together.
    """
    if override is not None:
        if not override.is_dir():
            raise IlpUsageError(
                f"--ilp-adapter-base: {override} is not a folder; point it at the base model "
                f"of adapter {folder} (a folder written by save_pretrained)"
            )
        return override
    named = adapter.get("base_model_name_or_path")
    if not isinstance(named, str) or not named:
        raise IlpUsageError(
            f"{what}: {folder / ADAPTER_CONFIG} names no base_model_name_or_path; "
            "pass --ilp-adapter-base=DIR (or adapter_base in ilp.yaml) with the base model"
        )
    base = folder / Path(named).expanduser()  # an absolute path stays as it is
    if not base.is_dir():
        raise IlpUsageError(
            f"{what}: {folder} is an adapter for {named!r}, which is not a local folder; "
            "pass --ilp-adapter-base=DIR (or adapter_base in ilp.yaml) with that base model "
            "saved by save_pretrained"
        )
    return base


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IlpUsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise IlpUsageError(f"{path}: expected a JSON object")
    return data


# -- GGUF ---------------------------------------------------------------------------------------

#: GGUF metadata value types (ggml's gguf.h): scalar type -> struct format.
_GGUF_SCALARS = {
    0: "B",  # uint8
    1: "b",  # int8
    2: "H",  # uint16
    3: "h",  # int16
    4: "I",  # uint32
    5: "i",  # int32
    6: "f",  # float32
    7: "?",  # bool
    10: "Q",  # uint64
    11: "q",  # int64
    12: "d",  # float64
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_checkpoint(path: Path, what: str) -> CheckpointInfo:
    """A GGUF file as a checkpoint: its header as a config.json-like mapping."""
    if importlib.util.find_spec("gguf") is None:
        raise IlpUsageError(
            f"{what}: {path} is a GGUF file, and transformers reads those with the gguf "
            "package, which is not installed: pip install 'pytest-ilp[gguf]'"
        )
    try:
        metadata = read_gguf_metadata(path)
    except (OSError, ValueError, struct.error) as exc:
        raise IlpUsageError(
            f"{what}: {path} is not a readable GGUF file ({exc}); export it again "
            "(llama.cpp's convert_hf_to_gguf.py) or point at a save_pretrained folder"
        ) from None
    architecture = metadata.get("general.architecture")
    config: dict[str, Any] = {"model_type": architecture}
    if isinstance(architecture, str):
        context = metadata.get(f"{architecture}.context_length")
        if isinstance(context, int):
            config["max_position_embeddings"] = context
        vocab = metadata.get(f"{architecture}.vocab_size")
        if isinstance(vocab, int):
            config["vocab_size"] = vocab
    if "vocab_size" not in config and isinstance(metadata.get("tokenizer.ggml.tokens"), int):
        config["vocab_size"] = metadata["tokenizer.ggml.tokens"]
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    if isinstance(eos, int):
        config["eos_token_id"] = eos
    return CheckpointInfo(path.parent, config, gguf_file=path.name)


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The key/value header of a GGUF file (format versions 2 and 3).

    Scalars and strings come back as values; an array comes back as its length (the tokenizer's
    vocabulary is one), since nothing here needs its items. Reading stops at the tensor index.
    """
    with path.open("rb") as handle:

        def read(fmt: str) -> Any:
            size = struct.calcsize("<" + fmt)
            data = handle.read(size)
            if len(data) != size:
                raise ValueError("the file ends inside its header")
            return struct.unpack("<" + fmt, data)[0]

        def string() -> str:
            length = read("Q")
            data = handle.read(length)
            if len(data) != length:
                raise ValueError("the file ends inside its header")
            return data.decode("utf-8", errors="replace")

        def skip(kind: int, count: int) -> None:
            if kind in _GGUF_SCALARS:
                handle.seek(count * struct.calcsize("<" + _GGUF_SCALARS[kind]), 1)
            elif kind == _GGUF_STRING:
                for _ in range(count):
                    handle.seek(read("Q"), 1)
            elif kind == _GGUF_ARRAY:
                for _ in range(count):
                    inner, inner_count = read("I"), read("Q")
                    skip(inner, inner_count)
            else:
                raise ValueError(f"unknown GGUF value type {kind}")

        if handle.read(4) != b"GGUF":
            raise ValueError("no GGUF magic number at the start")
        version = read("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}; versions 2 and 3 are read")
        read("Q")  # tensor count
        metadata: dict[str, Any] = {}
        for _ in range(read("Q")):
            key, kind = string(), read("I")
            if kind in _GGUF_SCALARS:
                metadata[key] = read(_GGUF_SCALARS[kind])
            elif kind == _GGUF_STRING:
                metadata[key] = string()
            elif kind == _GGUF_ARRAY:
                inner, count = read("I"), read("Q")
                skip(inner, count)
                metadata[key] = count
            else:
                raise ValueError(f"unknown GGUF value type {kind} for {key!r}")
        return metadata
