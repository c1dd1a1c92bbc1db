"""Exceptions that pytest-ilp raises, each meant to reach the user as a readable message.

The core raises only these (never `pytest.UsageError`: it does not import pytest). The plugin
turns them into pytest's own errors with the message unchanged: an `IlpUsageError` into a usage
error (exit status 4), an `IlpDataError` into a collection error of its data file, a
`SampleProblem` into an error of the sample's test.
"""

from __future__ import annotations


class IlpError(Exception):
    """Anything pytest-ilp reports to the user: the message says what is wrong, where (the file
    and line, the setting, the sample id) and what to do."""


class IlpUsageError(IlpError):
    """A setting, a checkpoint or a backend cannot be used as given (a missing file, a bad
    value, an optional package not installed): nothing can be checked until it is fixed."""


class IlpDataError(IlpError):
    """A data file cannot be read at all (bad syntax, unsupported layout, duplicate ids).

    The message names the file and line and says what to do.
    """


class SampleProblem(IlpError):
    """One sample cannot be checked (no target, unknown format, too long for the model).

    Raised when its test runs, so that the other samples still run and this one is reported as
    an error, never dropped.
    """


class IlpWarning(UserWarning):
    """A pytest-ilp signal could not be computed; the run goes on without it."""
