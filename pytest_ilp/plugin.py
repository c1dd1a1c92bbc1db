"""The pytest-ilp plugin's entry point (`pytest11`): options, markers, hook specs, fixtures.

pytest imports this module on every run of every project that has pytest-ilp installed, so it
imports almost nothing: the options and markers must exist for `--help`, `--strict-markers`
and `-p no:ilp`, and come from modules of literals (`config.option_table`, generated from
`Settings`, and `markers`); everything else (`shell`: the hooks of a run, and the core behind
them) is imported only once the settings may name a checkpoint. `tests/test_layout.py` pins
what importing this module loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import pytest

from pytest_ilp import hooks
from pytest_ilp.config.option_table import DEFAULT_CONFIG_NAME, FLAGS, INI
from pytest_ilp.markers import MARKERS

if TYPE_CHECKING:
    from pytest_ilp.core.samples import Sample
    from pytest_ilp.core.verdicts import Verdict


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ilp", "pytest-ilp: test that a checkpoint learned its SFT data")
    for flag, arguments in FLAGS:
        group.addoption(flag, **arguments)
    for key, help, ini_type in INI:
        parser.addini(key, help, type=ini_type, default=None)  # type: ignore[arg-type]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


@pytest.hookimpl(trylast=True)  # after conftest hooks, which may build the checkpoint first
def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    if not may_be_active(config):
        return
    from pytest_ilp.usage import usage_errors

    # Through sys.modules, not the package's attribute: an in-process pytest run (pytester)
    # drops the modules it imported, and the hooks must see the session module the fixtures do.
    shell = importlib.import_module("pytest_ilp.shell")
    with usage_errors():
        if shell.activate(config):
            config.pluginmanager.register(shell, "ilp-run")


def may_be_active(config: pytest.Config) -> bool:
    """Whether any source may name a checkpoint: the command line, the ini file, or an
    ilp.yaml (given, or in the rootdir). Without one the plugin loads nothing further."""
    return bool(
        config.option.ilp_checkpoint
        or config.getini("ilp_checkpoint")
        or config.option.ilp_config
        or config.getini("ilp_config")
        or (config.rootpath / DEFAULT_CONFIG_NAME).is_file()
    )


@pytest.fixture
def ilp_sample(request: pytest.FixtureRequest) -> Sample:
    """The SFT sample this test is parametrized with (see `@pytest.mark.ilp_dataset`)."""
    from pytest_ilp.session import STATE_KEY

    if STATE_KEY not in request.config.stash:
        pytest.skip("pytest-ilp is not active: pass --ilp-checkpoint (or set it in ilp.yaml)")
    sample: Sample = request.param
    request.config.stash[STATE_KEY].outcome(sample)  # an unscorable sample errors here
    return sample


@pytest.fixture
def ilp_verdict(request: pytest.FixtureRequest, ilp_sample: Sample) -> Verdict:
    """The checkpoint's verdict on this test's `ilp_sample` (scored before the tests ran)."""
    from pytest_ilp.checks import record_properties
    from pytest_ilp.session import STATE_KEY

    outcome = request.config.stash[STATE_KEY].outcome(ilp_sample)
    record_properties(request.node, outcome)
    assert outcome.verdict is not None
    return outcome.verdict
