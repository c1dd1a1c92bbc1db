"""The example world's pytest setup: build the artefacts on the first run, then pytest-ilp tests
the final checkpoint as ilp.yaml (beside this file) configures it.

`pytest example_project` makes this folder the rootdir (it holds pytest.ini), so pytest-ilp reads
example_project/ilp.yaml. pytest-ilp's own `pytest_configure` runs last, after this one, so the
checkpoints exist by the time it checks them.
"""

from __future__ import annotations

import importlib.util
import sys
from contextlib import nullcontext

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
        log(f"building into {out} (first run only; a few minutes on 2 CPU cores)")
        build_world.build(out, log=log)


def pytest_sessionstart(session: pytest.Session) -> None:
    """The trainer-callback integration (train_with_callback.py, when TRL is installed): its
    training runs once, after the world; the pytest-ilp comparison stays in the script."""
    out = build_world.DEFAULT_OUT / "callback"
    if importlib.util.find_spec("trl") is None or train_with_callback.is_built(out):
        return
    capture = session.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        train_with_callback.build(out, build_world.DEFAULT_OUT, log=_log, compare=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = train_with_callback.summary_lines(build_world.DEFAULT_OUT / "callback")
    if lines:
        terminalreporter.section("during training: ILPCallback (train_with_callback.py)")
        for line in lines:
            terminalreporter.write_line(line)


def _log(line: str) -> None:
    print(f"example world: {line}", file=sys.stderr, flush=True)
