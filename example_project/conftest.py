"""The example world's pytest setup: build the artefacts on the first run, then pytest-ilp tests
the final checkpoint as ilp.yaml (beside this file) configures it.

`pytest example_project` makes this folder the rootdir (it holds pytest.ini), so pytest-ilp reads
example_project/ilp.yaml. pytest-ilp's own `pytest_configure` runs last, after this one, so the
checkpoints exist by the time it checks them.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext

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
