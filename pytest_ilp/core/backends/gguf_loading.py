"""Loading a GGUF checkpoint with its file parsed once, and quietly.

transformers reads a GGUF checkpoint with the `gguf` package's Python reader three times: for
the tokenizer, for the config and for the weights (`load_gguf_checkpoint` each time). For a
chat model's 49k-token vocabulary each parse takes seconds. Mapping the file's tensor names to
the model's, it then builds gguf's `TensorNameMap` once per submodule of the model
(`get_gguf_hf_weights_map` recurses), hundreds of times for a 30-layer model. Both give the
same result every time for the same file and architecture. Loading SmolLM2-135M's tokenizer
and model took 35.2 s without reuse and 13.5 s with it here (`benchmarks/gguf_load.py`, the
same weights and vocabulary). It also draws a tqdm bar of its own while de-quantizing, which
transformers' `disable_progress_bar` does not reach, in the middle of pytest's output.

`gguf_loading()` lets transformers reuse both and draw no bar while a checkpoint loads.
transformers imports `GGUFReader` and `get_tensor_name_map` from `gguf` inside the functions
that use them, so the module's attributes are what it calls; everything is restored on leaving.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any


@contextmanager
def gguf_loading() -> Iterator[None]:
    """Within this block, one parse per GGUF file (keyed by its real path, inode, size and
    change time: a file replaced meanwhile is parsed again), one tensor-name map per
    architecture and depth, and no de-quantizing bar."""
    try:
        import gguf as gguf_module
    except ImportError:  # nothing to reuse: transformers says gguf is missing
        yield
        return
    import transformers.modeling_gguf_pytorch_utils as utils_module

    gguf: Any = gguf_module  # attributes replaced below, for this block
    utils: Any = utils_module
    read = gguf.GGUFReader
    readers: dict[tuple[str, int, int, int, str], Any] = {}

    def reader(path: str | os.PathLike[str], mode: str = "r") -> Any:
        real = os.path.realpath(path)
        stat = os.stat(real)
        key = (real, stat.st_ino, stat.st_size, stat.st_mtime_ns, mode)
        if key not in readers:
            readers[key] = read(path, mode)
        return readers[key]

    with ExitStack() as restore:
        for module, name, value in (
            (gguf, "GGUFReader", reader),
            (gguf, "get_tensor_name_map", functools.cache(gguf.get_tensor_name_map)),
            (utils, "tqdm", functools.partial(utils.tqdm, disable=True)),
        ):
            restore.callback(setattr, module, name, getattr(module, name))
            setattr(module, name, value)
        yield
