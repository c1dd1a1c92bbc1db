"""`assert_learned`: the check of a data item, for use inside your own test functions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import pytest

from pytest_ilp.core.gate import Decision, Row
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.verdicts import Verdict
from pytest_ilp.report.build import SampleOutcome
from pytest_ilp.report.sample_text import item_properties
from pytest_ilp.scopes import threshold_scope
from pytest_ilp.session import STATE_KEY


class NotLearned(AssertionError):
    """The checkpoint does not reproduce the sample; carries the verdict for the report."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"sample {verdict.sample_id} was not learned")
        self.verdict = verdict


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
        decision, row = gate_decision(item, outcome)
        item.user_properties.extend(item_properties(outcome, decision, row))


def gate_decision(item: pytest.Item, outcome: SampleOutcome) -> tuple[Decision | None, Row | None]:
    """The gate's decision on the item's sample within the item's scope, and its cause's row."""
    gate = item.config.stash[STATE_KEY].gate
    if gate is None:
        return None, None
    scope, _ = threshold_scope(item)
    row = gate.row(scope, outcome.cause) if outcome.cause is not None else None
    return gate.decision(outcome.sample.id, scope), row


def enforce(item: pytest.Item, outcome: SampleOutcome) -> None:
    """Fail the item when its sample is unlearned and the gate fails it; when the gate tolerates
    it, report the item as xfailed (imperatively, so `xfail_strict` does not turn it into a
    failure) with the cause, the count and the budget as the reason."""
    verdict = outcome.verdict
    assert verdict is not None
    if verdict.learned:
        return
    decision, _ = gate_decision(item, outcome)
    if decision is not None and decision.tolerated:
        # pytest.xfail(), without the traceback pytest would format for the report and drop:
        # that costs a quarter of a second per item.
        raise pytest.xfail.Exception(decision.reason, pytrace=False)
    raise NotLearned(verdict)


def assert_learned(sample: Sample | Verdict) -> Verdict:
    """Fail the running test, with pytest-ilp's report, unless the checkpoint learned `sample`.

    Takes the `ilp_sample` (or its `ilp_verdict`) of a test parametrized by pytest-ilp and
    returns the verdict, so a test can go on to check more (say, the margin)::

        def test_learned_with_room(ilp_sample):
            verdict = pytest_ilp.assert_learned(ilp_sample)
            assert verdict.margin > 1.0

    Inside a pytest-ilp run it applies the CI gate: an unlearned sample whose cause is within
    its budget makes the test xfail instead of fail (see the README, "CI gate").
    """
    item = _running.get()
    state = item.config.stash.get(STATE_KEY, None) if item is not None else None
    if isinstance(sample, Verdict):
        verdict = sample
        outcome = None
        # The session's own verdict (the ilp_verdict fixture's) goes through the gate.
        session_verdicts = state.result.verdicts if state and state.result else {}
        if session_verdicts.get(verdict.sample_id) == verdict:
            assert state is not None
            outcome = state.outcome(state.samples[verdict.sample_id])
    else:
        if item is None or state is None:
            raise RuntimeError(
                "assert_learned(sample) works inside a test run with --ilp-checkpoint; "
                "pass the test's ilp_verdict instead to use it elsewhere"
            )
        outcome = state.outcome(sample)
        assert outcome.verdict is not None
        verdict = outcome.verdict
    if item is not None and outcome is not None:
        record_properties(item, outcome)
        enforce(item, outcome)
    elif not verdict.learned:
        raise NotLearned(verdict)
    return verdict
