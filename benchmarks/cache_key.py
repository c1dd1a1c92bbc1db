"""What keying the score cache by content costs on a 500 MB checkpoint.

    python benchmarks/cache_key.py            # 500 MB of random float32 tensors in a temp folder
    python benchmarks/cache_key.py --mb 100   # a smaller one

The run key of the score cache holds a sha256 of every checkpoint file (see
pytest_ilp/core/cache.py).
This times, on one safetensors file of random tensors:

cold      the first run: every byte read and hashed;
racy      the next run when the file was written within `RACY_NS` of the first hash (a
          checkpoint saved just before pytest ran): hashed once more, as git re-checks a
          "racily clean" file;
warm      every later run: one stat per file, the digest taken from the memo;
changed   the weights rewritten in place with the same size and mtime restored (what `cp -p`,
          a tar or rsync restore leave): detected by the change time, hashed again, new key.

Times are medians of --repeat runs; the warm/cold ratio is what to read on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from pytest_ilp.core.cache import RACY_NS, ScoreCache


def make_checkpoint(folder: Path, megabytes: int) -> Path:
    rng = np.random.default_rng(0)
    per_tensor = 16 << 20  # 16 MiB tensors, as a model's layers come in many pieces
    tensors = {}
    remaining = megabytes * 1_000_000
    index = 0
    while remaining > 0:
        size = min(per_tensor, remaining)
        tensors[f"layer.{index}.weight"] = rng.standard_normal(size // 4, dtype=np.float32)
        remaining -= size
        index += 1
    path = folder / "model.safetensors"
    save_file(tensors, str(path))
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return path


def timed(action: Callable[[], str]) -> tuple[float, str]:
    started = time.perf_counter()
    digest = action()
    return time.perf_counter() - started, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="checkpoint size in MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ilp-cache-bench-") as tmp:
        folder = Path(tmp) / "checkpoint"
        folder.mkdir()
        weights = make_checkpoint(folder, args.mb)
        size = weights.stat().st_size
        cold, racy, warm, changed = [], [], [], []
        for repeat in range(args.repeat):
            cache = ScoreCache(Path(tmp) / f"cache-{repeat}")
            seconds, first = timed(lambda c=cache: c.folder_digest(folder))  # type: ignore[misc]
            cold.append(seconds)
            seconds, again = timed(lambda c=cache: c.folder_digest(folder))  # type: ignore[misc]
            racy.append(seconds)
            # Let the file age past the racy window, then time the memo hit.
            time.sleep(RACY_NS / 1e9 + 0.1)
            timed(lambda c=cache: c.folder_digest(folder))  # type: ignore[misc]
            seconds, warm_digest = timed(lambda c=cache: c.folder_digest(folder))  # type: ignore[misc]
            warm.append(seconds)
            assert first == again == warm_digest
            # Same size, same mtime, other bytes: as `cp -p` of retrained weights.
            info = weights.stat()
            with weights.open("r+b") as handle:
                handle.seek(size // 2)
                byte = handle.read(1)
                handle.seek(size // 2)
                handle.write(bytes([byte[0] ^ 0xFF]))
            os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns))
            seconds, new = timed(lambda c=cache: c.folder_digest(folder))  # type: ignore[misc]
            changed.append(seconds)
            assert new != first, "a same-size, same-mtime change went unnoticed"
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    print(f"checkpoint: {size / 1e6:.0f} MB safetensors, {args.repeat} repetitions (medians)")
    print(f"cold    {cold_s:8.3f} s   ({size / 1e6 / cold_s:,.0f} MB/s sha256)")
    print(f"racy    {statistics.median(racy):8.3f} s   (hashed again: written just before)")
    print(f"warm    {warm_s * 1e3:8.3f} ms  ({warm_s / cold_s:.5f} of cold)")
    print(f"changed {statistics.median(changed):8.3f} s   (same size and mtime: new key)")


if __name__ == "__main__":
    main()
