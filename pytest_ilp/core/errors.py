"""Exceptions that pytest-ilp raises, each meant to reach the user as a readable message."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_ilp.core.verdicts import Verdict


class IlpDataError(Exception):
    """A data file cannot be read at all (bad syntax, unsupported layout, duplicate ids).

    The message names the file and line and says what to do.
    """


class SampleProblem(Exception):
    """One sample cannot be checked (no target, unknown format, too long for the model).

    Raised when its test runs, so that the other samples still run and this one is reported as
    an error, never dropped.
    """


class NotLearned(AssertionError):
    """The checkpoint does not reproduce the sample; carries the verdict for the report."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"sample {verdict.sample_id} was not learned")
        self.verdict = verdict
