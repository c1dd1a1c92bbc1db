"""The on-disk score cache, under pytest's cache folder (`.pytest_cache/d/ilp`).

Entries are keyed in two parts:

* the *run key*: a content hash of every file in the checkpoint folder (weights, config,
  tokenizer, chat template), the backend with its resolved device and dtype, and the settings
  that change what is scored (render rules, generation budget);
* the *sample key*: a hash of the sample's prompt and target.

So a changed checkpoint, tokenizer, template, dtype or sample is scored afresh, and nothing
else is. The key follows content, never names or dates: each file's sha256 is computed once
and remembered by its device, inode, size, modification *and* change time (`st_ctime`, which
no `cp -p`, tar, rsync or `touch -d` can set back). A file changed within `RACY_NS` of being
hashed is hashed again on the next run, as git treats "racily clean" index entries, since two
writes within one tick of the file system's clock can leave every stamp the same. So a re-run
does not read gigabytes again, and a changed file is never taken for the old one.

A file lock per run key lets parallel pytest processes (xdist workers) share the work: the
first scores, the others then read its results.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_ilp.core.atomic import write_text_atomic

#: bump when the meaning of a cached entry changes, so old entries are never misread.
# 2: verdicts judge the text (retokenized reproductions); 3: a target holding a stop token
# is a problem, not scored; 4: unlearned verdicts carry each target token's probability and text.
CACHE_SCHEMA = 4
#: a remembered digest counts only for a file last changed this long before it was hashed
#: (nanoseconds): file system clocks tick coarsely (Linux: a jiffy, FAT: 2 s).
RACY_NS = 2_000_000_000
#: the name of the memo of file digests, in the cache folder.
MEMO = "file-digests-v2.json"


def stable_hash(data: Any, length: int = 24) -> str:
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


class ScoreCache:
    """Per-run-key JSONL files of `{"k": sample key, "v": entry}` lines, appended under a lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "scores").mkdir(parents=True, exist_ok=True)

    def _path(self, run_key: str) -> Path:
        return self.root / "scores" / f"{run_key}.jsonl"

    @contextmanager
    def locked(self, run_key: str) -> Iterator[None]:
        with FileLock(str(self._path(run_key)) + ".lock"):
            yield

    def load(self, run_key: str) -> dict[str, Any]:
        path = self._path(run_key)
        entries: dict[str, Any] = {}
        if not path.exists():
            return entries
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    entries[record["k"]] = record["v"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn write: that sample is simply scored again
        return entries

    def append(self, run_key: str, entries: Mapping[str, Any]) -> None:
        lines = "".join(
            json.dumps({"k": key, "v": value}, ensure_ascii=False) + "\n"
            for key, value in entries.items()
        )
        with self._path(run_key).open("a", encoding="utf-8") as handle:
            handle.write(lines)

    def folder_digest(self, folder: Path) -> str:
        """A content hash of the files directly in `folder` (sub-folders are other checkpoints)."""
        return self.files_digest(_files(folder))

    def files_digest(self, paths: Iterable[Path]) -> str:
        """A content hash of the files (by name and content), memoised by their stamps."""
        memo_path = self.root / MEMO
        with FileLock(str(memo_path) + ".lock"):
            try:
                memo = json.loads(memo_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                memo = {}
            if not isinstance(memo, dict):
                memo = {}
            digests = {}
            for path in paths:
                key = str(path.resolve())
                digest = remembered_digest(path, memo.get(key))
                if digest is None:
                    # Stamp and time taken before reading: a write during the read shows as a
                    # newer stamp, or a change after `hashed_at`, and is hashed again next time.
                    stamp, hashed_at = stamp_of(path), time.time_ns()
                    digest = file_digest(path)
                    memo[key] = {"stamp": stamp, "hashed_at": hashed_at, "sha256": digest}
                digests[path.name] = digest
            write_text_atomic(memo_path, json.dumps(memo))
        return stable_hash(digests, length=64)


def stamp_of(path: Path) -> list[int]:
    """What changes whenever a file's content may have: device, inode, size, mtime, ctime."""
    info = path.stat()
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def remembered_digest(path: Path, entry: Any) -> str | None:
    """The digest remembered for `path`, or None when it must be hashed (again)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        return None
    stamp = stamp_of(path)
    if entry.get("stamp") != stamp:
        return None
    hashed_at = entry.get("hashed_at")
    # Changed within RACY_NS of the hash: a second write in the same clock tick would leave
    # the same stamp, so the hash may be of content that has since been replaced.
    if not isinstance(hashed_at, int) or max(stamp[3], stamp[4]) > hashed_at - RACY_NS:
        return None
    return str(entry["sha256"])


def _files(folder: Path) -> Iterable[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def file_digest(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (hashlib.file_digest is Python 3.11+)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
