"""The on-disk score cache, under pytest's cache folder (`.pytest_cache/d/ilp`).

Entries are keyed in two parts:

* the *run key*: a content hash of every file in the checkpoint folder (weights, config,
  tokenizer, chat template), the backend with its resolved device and dtype, and the settings
  that change what is scored (render rules, generation budget);
* the *sample key*: a hash of the sample's prompt and target.

So a changed checkpoint, tokenizer, template, dtype or sample is scored afresh, and nothing
else is. Weight files are hashed once and remembered by (path, size, mtime), so a re-run does
not read gigabytes again. A file lock per run key lets parallel pytest processes (xdist
workers) share the work: the first scores, the others then read its results.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

#: bump when the meaning of a cached entry changes, so old entries are never misread.
CACHE_SCHEMA = 2  # 2: verdicts judge the text (retokenized reproductions)


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
        """A content hash of the files (by name and content), memoised by size and mtime."""
        memo_path = self.root / "file-digests.json"
        with FileLock(str(memo_path) + ".lock"):
            try:
                memo = json.loads(memo_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                memo = {}
            digests = {}
            for path in paths:
                stat = path.stat()
                stamp = [stat.st_size, stat.st_mtime_ns]
                known = memo.get(str(path.resolve()))
                if known is None or known[:2] != stamp:
                    known = [*stamp, file_digest(path)]
                    memo[str(path.resolve())] = known
                digests[path.name] = known[2]
            tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo), encoding="utf-8")
            tmp.replace(memo_path)
        return stable_hash(digests, length=64)


def _files(folder: Path) -> Iterable[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def file_digest(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (hashlib.file_digest is Python 3.11+)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
