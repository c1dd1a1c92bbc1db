"""`assert_learned`: the check of a data item, for use inside your own test functions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import pytest

from pytest_ilp.errors import NotLearned
from pytest_ilp.report import SampleOutcome, item_properties
from pytest_ilp.samples import Sample
from pytest_ilp.session import STATE_KEY
from pytest_ilp.verdicts import Verdict

# The test being run, so that `assert_learned(sample)` can find the session's verdicts and
# record the figures on that test's report. Set by the plugin around each test call.
_running: ContextVar[pytest.Item | None] = ContextVar("pytest_ilp_running_item", default=None)


@contextmanager
def running(item: pytest.Item) -> Iterator[None]:
    token = _running.set(item)
    try:
        yield
    finally:
        _running.reset(token)


def record_properties(item: pytest.Item, outcome: SampleOutcome) -> None:
    """Put the sample's figures on the item's report (JUnit XML properties), once."""
    if not any(name == "ilp_sample_id" for name, _ in item.user_properties):
        item.user_properties.extend(item_properties(outcome))


def assert_learned(sample: Sample | Verdict) -> Verdict:
    """Fail the running test, with pytest-ilp's report, unless the checkpoint learned `sample`.

    Takes the `ilp_sample` (or its `ilp_verdict`) of a test parametrized by pytest-ilp and
    returns the verdict, so a test can go on to check more (say, the margin)::

        def test_learned_with_room(ilp_sample):
            verdict = pytest_ilp.assert_learned(ilp_sample)
            assert verdict.margin > 1.0
    """
    if isinstance(sample, Verdict):
        verdict = sample
    else:
        item = _running.get()
        if item is None or STATE_KEY not in item.config.stash:
            raise RuntimeError(
                "assert_learned(sample) works inside a test run with --ilp-checkpoint; "
                "pass the test's ilp_verdict instead to use it elsewhere"
            )
        outcome = item.config.stash[STATE_KEY].outcome(sample)
        assert outcome.verdict is not None
        verdict = outcome.verdict
        record_properties(item, outcome)
    if not verdict.learned:
        raise NotLearned(verdict)
    return verdict
