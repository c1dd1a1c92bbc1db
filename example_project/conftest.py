"""The example world's pytest setup: build the artefacts on the first run, then pytest-ilp tests
the final checkpoint as ilp.yaml (beside this file) configures it.

`pytest example_project` makes this folder the rootdir (it holds pytest.ini), so pytest-ilp reads
example_project/ilp.yaml. pytest-ilp's own `pytest_configure` runs last, after this one, so the
checkpoints exist by the time it checks them.

The gate fails on purpose (two causes are planted over their budgets): the header says so
first, and the last line says how a passing gate looks.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Generator
from contextlib import nullcontext
from typing import Any

import pytest

import build_world
import train_with_callback


def pytest_configure(config: pytest.Config) -> None:
    out = build_world.DEFAULT_OUT
    if build_world.is_built(out):
        return
    capture = config.pluginmanager.get_plugin("capturemanager")

    def log(line: str) -> None:
        print(f"example world: {line}", file=sys.stderr, flush=True)

    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        log(
            f"building into {out} (first run only: pre-training on one CPU thread, the most of "
            "it; much longer on a busy machine, see example_project/README.md, Time)"
        )
        build_world.build(out, log=log)


#: ilp.yaml's budgets, loosened so that the planted conflicts and contradictions fit.
PASSING = "--ilp-threshold=knowledge_conflict=10% --ilp-threshold=data_inconsistency=7%"


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        "example world: its gate FAILS ON PURPOSE (exit status 1): knowledge conflicts and "
        "data inconsistencies are planted over ilp.yaml's budgets"
    ]


@pytest.hookimpl(wrapper=True, tryfirst=True, specname="pytest_terminal_summary")
def pytest_terminal_summary_last_line(
    terminalreporter: Any, exitstatus: int
) -> Generator[None, None, None]:
    """The very last line before pytest's counts, after pytest-ilp's closing block."""
    result = yield
    if exitstatus == pytest.ExitCode.TESTS_FAILED:
        terminalreporter.write_line(
            "example world: this gate failed on purpose. A passing one: "
            f"python -m pytest example_project {PASSING}"
        )
    return result


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--example-callback",
        action="store_true",
        help="example world: also fine-tune its two stages again with TRL's SFTTrainer and "
        "ILPCallback (train_with_callback.py; once, about as long as the SFT stages of the "
        "build and a check of every sample at every epoch)",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """The trainer-callback integration (train_with_callback.py), with --example-callback: its
    training runs once, after the world; the pytest-ilp comparison stays in the script."""
    out = build_world.DEFAULT_OUT / "callback"
    if not session.config.getoption("example_callback") or train_with_callback.is_built(out):
        return
    if importlib.util.find_spec("trl") is None:
        raise pytest.UsageError("--example-callback needs TRL: pip install 'pytest-ilp[trl]'")
    capture = session.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        _log("fine-tuning both stages again with SFTTrainer and ILPCallback")
        train_with_callback.build(out, build_world.DEFAULT_OUT, log=_log, compare=False, quiet=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.section("during training: ILPCallback (train_with_callback.py)")
    lines = train_with_callback.summary_lines(build_world.DEFAULT_OUT / "callback") or [
        "not run: python -m pytest example_project --example-callback (or python "
        "example_project/train_with_callback.py, which also compares forgetting from the "
        "trajectory with forgetting from the stage-1 checkpoint)"
    ]
    for line in lines:
        terminalreporter.write_line(line)


def _log(line: str) -> None:
    print(f"example world: {line}", file=sys.stderr, flush=True)
