"""What `ILPCallback` checks and writes, apart from the trainer: the samples it takes (from
paths, records or `Sample`s, all or a seeded subset) and its trajectory file (`continues=`,
resuming). Its final report is `pytest_ilp.check`'s.

Nothing here imports transformers; `integrations.transformers` holds the callback itself.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_ilp.core.datafiles import load_samples
from pytest_ilp.core.datapaths import expand_data_paths
from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.samples import Sample, sample_from_record, unique_ids
from pytest_ilp.core.train_log import read_train_log

TRAJECTORY_FILE = "ilp-trajectory.jsonl"
#: where records given as a dataset (not a file) say they come from.
DATASET_SOURCE = Path("<dataset>")


# -- data --------------------------------------------------------------------------------------


def load_data(data: Any) -> list[Sample]:
    """Samples from paths, records (a `datasets.Dataset`, a list of dicts) or `Sample`s.

    A file that cannot be read raises `IlpDataError` naming it; a record that cannot be
    checked becomes a sample whose `problem` says why (reported as invalid, never dropped).
    """
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    items = list(data) if isinstance(data, Iterable) else None
    if items is None:
        raise TypeError(
            f"ILPCallback(data=...) takes a path, records or samples, not {type(data).__name__}"
        )
    if all(isinstance(i, (str, os.PathLike)) for i in items):
        taken: dict[str, Sample] = {}
        samples: list[Sample] = []
        for path in expand_data_paths([Path(i) for i in items]):
            samples.extend(load_samples(path, taken=taken))
        return samples
    if all(isinstance(i, Sample) for i in items):
        # Refused now rather than when training ends, where the report's check would refuse it.
        counts = Counter(i.id for i in items)
        repeated = sorted(i for i, n in counts.items() if n > 1)
        if repeated:
            raise IlpDataError(
                f"ILPCallback(data=...): sample id(s) given twice: {', '.join(repeated[:5])}; "
                "give each sample once (pytest_ilp.api.read_samples keeps ids unique)"
            )
        return list(items)
    if all(isinstance(i, Mapping) for i in items):
        records = [sample_from_record(r, DATASET_SOURCE, n) for n, r in enumerate(items, start=1)]
        return unique_ids(records, {})
    kinds = sorted({type(i).__name__ for i in items})
    raise TypeError(
        f"ILPCallback(data=...): expected paths, records (mappings) or Samples, got {kinds}"
    )


def choose_subset(samples: Sequence[Sample], size: int | None, seed: int) -> list[Sample]:
    """`size` samples drawn with `seed` (the same ones at every point and on every run with the
    same data), in data order; all of them when `size` is None or not smaller."""
    if size is None or size >= len(samples):
        return list(samples)
    chosen = set(random.Random(seed).sample(range(len(samples)), size))
    return [s for n, s in enumerate(samples) if n in chosen]


# -- the trajectory ----------------------------------------------------------------------------


def read_trajectory(path: Path) -> list[dict[str, Any]]:
    """The records of an earlier trajectory (`continues=`), checked as --ilp-train-log reads."""
    read_train_log(path)  # raises IlpDataError naming the file and line of a bad record
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            records.append(json.loads(line))
    if records and not all("learned" in r for r in records):
        raise IlpDataError(
            f"{path}: not a trajectory written by ILPCallback (records without `learned`)"
        )
    return records


def last_point(records: Sequence[Mapping[str, Any]]) -> dict[str, bool] | None:
    if not records:
        return None
    last = max(int(r.get("point", 0)) for r in records)
    return {str(r["id"]): bool(r["learned"]) for r in records if r.get("point", 0) == last}


def points(records: Sequence[Mapping[str, Any]]) -> int:
    return len({r.get("point") for r in records})
