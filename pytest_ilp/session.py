"""The pytest side of one pytest-ilp run, kept in `config.stash` under `STATE_KEY`.

The check itself (scoring, signals, diagnosis, gate, report) is `core.pipeline.Pipeline`;
this adds what only a pytest run has: the deselected items, what the xdist workers sent, the
exit status, the files announced, and the progress bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_ilp.core.backends import Progress
from pytest_ilp.core.output import RunOutput
from pytest_ilp.core.pipeline import Pipeline

#: a line of progress in a log that is not a terminal, at most this often (seconds).
LOG_PROGRESS_EVERY = 30.0


@dataclass
class IlpSession(Pipeline):
    """The run's pipeline, and the pytest state around it."""

    #: on an xdist controller: each worker's output, by worker id.
    received: dict[str, RunOutput] = field(default_factory=dict)
    #: the run's output, once the session finished (what the summary and the files show).
    final: RunOutput | None = None
    #: the exit status the session ends with, once the gate has had its say.
    exitstatus: int | None = None
    #: the items `-k`, `-m`, `--lf` or a shard deselected (pytest_deselected).
    deselected: list[pytest.Item] = field(default_factory=list)
    #: every file the run wrote, as (what, path): the closing block announces them.
    written: list[tuple[str, Path]] = field(default_factory=list)


STATE_KEY = pytest.StashKey[IlpSession]()


def progress_reporter(write_line: Callable[[str], None]) -> Callable[[int], Progress]:
    """A progress callback factory: a tqdm bar on a terminal, a line every 30 s in a CI log
    (through `write_line`, which adds the "ilp: " prefix)."""

    def start(total: int) -> Progress:
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="sample", desc="ilp scoring", leave=False)

            def advance_bar(done: int) -> None:
                bar.update(done)
                if bar.n >= total:
                    bar.close()

            return advance_bar
        done_so_far = 0
        last = time.monotonic()

        def advance_log(done: int) -> None:
            nonlocal done_so_far, last
            done_so_far += done
            if time.monotonic() - last >= LOG_PROGRESS_EVERY and done_so_far < total:
                last = time.monotonic()
                write_line(f"scored {done_so_far}/{total} samples")

        return advance_log

    return start
