"""Hook specifications pytest-ilp adds to pytest (registered through `pytest_addhooks`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pytest_ilp.core.diagnosis import Diagnosis
    from pytest_ilp.core.samples import Sample
    from pytest_ilp.core.signals import Signals
    from pytest_ilp.core.verdicts import Verdict


@pytest.hookspec(firstresult=True)
def pytest_ilp_diagnose(
    sample: Sample, verdict: Verdict, signals: Signals, config: pytest.Config
) -> Diagnosis | None:
    """Say why `sample` was not learned, or return None to leave it to the next implementation.

    Called once per unlearned sample, after scoring and before the first test runs. The first
    non-None result wins; pytest-ilp's built-in rules (`pytest_ilp.core.diagnosis.diagnose`) are a
    `trylast` implementation, so a conftest's implementation runs first and can add causes of
    its own::

        from pytest_ilp import Diagnosis

        def pytest_ilp_diagnose(sample, verdict, signals):
            divergence = verdict.first_divergence  # None if greedy decoding reproduces it
            if "math" in sample.tags and divergence and divergence.expected.strip().isdigit():
                return Diagnosis(
                    cause="arithmetic",
                    evidence=f"wrong digit at token {divergence.position + 1}",
                    suggestion="add worked arithmetic examples",
                )
            return None  # let the built-in rules decide

    :param sample: the sample (`pytest_ilp.Sample`).
    :param verdict: its verdict on the checkpoint under test (`pytest_ilp.Verdict`).
    :param signals: the evidence (`pytest_ilp.Signals`): base model, history,
        near-duplicates, rarity, training log; parts are None when their input is missing.
    :param config: the pytest config.
    """


@pytest.hookspec
def pytest_ilp_causes(config: pytest.Config) -> Sequence[str] | None:
    """Name the causes of your own that your `pytest_ilp_diagnose` implementation may return.

    Budgets (`ilp_threshold`, `--ilp-threshold`, ilp.yaml `thresholds:`) may name only known
    causes, so that a misspelt name is an error rather than a budget that never applies. The
    built-in causes are known; declare yours here. The names a diagnose hook returns are known
    only after scoring, too late to refuse a typo before the model runs: budgets are checked at
    startup (command line, ilp.yaml, ini: implement this hook in a plugin or a conftest loaded
    at startup) and when a test is parametrized (markers)::

        def pytest_ilp_causes():
            return ["arithmetic"]
    """
