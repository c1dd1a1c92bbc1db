"""The example world's pytest setup: build the artefacts on the first run, then pytest-ilp tests
the final checkpoint as ilp.yaml (beside this file) configures it.

`pytest example_project` makes this folder the rootdir (it holds pytest.ini), so pytest-ilp reads
example_project/ilp.yaml. pytest-ilp's own `pytest_configure` runs last, after this one, so the
checkpoints exist by the time it checks them.

The gate fails on purpose (two causes are planted over their budgets): the header says so
first, and the last line says how a passing gate looks.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from contextlib import nullcontext
from typing import Any

import pytest

import build_world


def pytest_configure(config: pytest.Config) -> None:
    out = build_world.DEFAULT_OUT
    if build_world.is_built(out):
        return
    capture = config.pluginmanager.get_plugin("capturemanager")

    def log(line: str) -> None:
        print(f"example world: {line}", file=sys.stderr, flush=True)

    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        log(f"building into {out} (first run only; a few minutes on 2 CPU cores)")
        build_world.build(out, log=log)


#: ilp.yaml's budgets, loosened so that the planted conflicts and contradictions fit.
PASSING = "--ilp-threshold=knowledge_conflict=10% --ilp-threshold=data_inconsistency=7%"


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        "example world: its gate FAILS ON PURPOSE (exit status 1): knowledge conflicts and "
        "data inconsistencies are planted over ilp.yaml's budgets"
    ]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int) -> Generator[None, None, None]:
    """The very last line before pytest's counts, after pytest-ilp's closing block."""
    result = yield
    if exitstatus == pytest.ExitCode.TESTS_FAILED:
        terminalreporter.write_line(
            "example world: this gate failed on purpose. A passing one: "
            f"python -m pytest example_project {PASSING}"
        )
    return result
