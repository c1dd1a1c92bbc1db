"""Deterministic sample shards (`--ilp-shard=i/n`) for spreading one dataset over CI jobs.

A sample belongs to shard `hash(sample id) mod n`, so the split does not depend on the order
of the files or their records, on which other samples exist, or on the machine: adding a sample
never moves another one to a different shard.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """ "2/4" -> Shard(2, 4); raises `ValueError` saying what is expected."""
        index, slash, count = text.strip().partition("/")
        if not slash or not index.isdigit() or not count.isdigit():
            raise ValueError(f"expected I/N such as 1/4 (shard I of N), got {text!r}")
        shard = cls(int(index), int(count))
        if shard.count < 1 or not 1 <= shard.index <= shard.count:
            raise ValueError(f"the shard number must lie between 1 and N, got {text!r}")
        return shard

    def holds(self, sample_id: str) -> bool:
        digest = hashlib.sha256(sample_id.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
