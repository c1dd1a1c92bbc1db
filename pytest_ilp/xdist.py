"""pytest-xdist support: workers score once between them, the controller reports.

Every worker collects every item, so every worker's scope is the whole selection and its gate
is the same: whichever worker runs an item decides it the same way. The workers share the
scoring through the disk cache, under a file lock: the first to take the lock scores, the
others read its results. With the persistent cache off (`--ilp-no-cache`, or `-p
no:cacheprovider`), the controller hands the workers a cache folder of this run only, removed
at the end, so a sample is still scored once.

Each worker sends its run output (the JSON report, the export and its scoring figures) through
`workeroutput`, as syrupy does; the controller, which scores nothing, prints the summary and
writes the files from it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.core.output import RunOutput
from pytest_ilp.session import STATE_KEY

#: workerinput key: the run-only cache folder; workeroutput key: a worker's `RunOutput`.
RUN_CACHE = "ilp_run_cache"
OUTPUT = "ilp_output"


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def run_cache_of(config: pytest.Config) -> Path | None:
    """On a worker, the run-only cache folder its controller made (if any)."""
    folder = getattr(config, "workerinput", {}).get(RUN_CACHE)
    return Path(folder) if folder else None


def send_to_controller(config: pytest.Config, output: RunOutput) -> None:
    config.workeroutput[OUTPUT] = output.to_dict()  # type: ignore[attr-defined]


def combine(outputs: Sequence[RunOutput]) -> RunOutput:
    """One output for the run: the workers' reports are the same (same items, same verdicts),
    so the first is taken; the scoring figures add up, so scoring twice would show."""
    first = outputs[0]
    return RunOutput(
        report=first.report,
        export=first.export,
        **_combined_figures(
            [{"computed": o.computed, "cached": o.cached, "seconds": o.seconds} for o in outputs]
        ),
        diagnosis_passes=[
            {"checkpoint": same[0]["checkpoint"], **_combined_figures(same)}
            for same in zip(*(o.diagnosis_passes for o in outputs))
        ],
    )


def _combined_figures(passes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One checkpoint's scoring figures over the workers: the samples computed add up, the
    cached ones are the fewest any worker found, and the time is the slowest worker's."""
    return {
        "computed": sum(p["computed"] for p in passes),
        "cached": min(p["cached"] for p in passes),
        "seconds": max(p["seconds"] for p in passes),
    }


class IlpXdist:
    """Controller-side xdist hooks; registered only when pytest-xdist is loaded."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.run_cache: Path | None = None

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        state = self.config.stash.get(STATE_KEY, None)
        if state is None or state.cache is not None:
            return
        if self.run_cache is None:
            self.run_cache = Path(tempfile.mkdtemp(prefix="pytest-ilp-run-"))
        node.workerinput[RUN_CACHE] = str(self.run_cache)

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        state = self.config.stash.get(STATE_KEY, None)
        data = getattr(node, "workeroutput", {}).get(OUTPUT)
        if state is not None and data is not None:
            state.received[node.gateway.id] = RunOutput.from_dict(data)

    @pytest.hookimpl
    def pytest_unconfigure(self) -> None:
        if self.run_cache is not None:
            shutil.rmtree(self.run_cache, ignore_errors=True)
