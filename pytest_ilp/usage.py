"""The core's usage errors as pytest's own: the message alone, exit status 4."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pytest_ilp.core.errors import IlpUsageError


@contextmanager
def usage_errors() -> Iterator[None]:
    """The core's usage errors as pytest's own: the message alone, exit status 4."""
    try:
        yield
    except IlpUsageError as exc:
        raise pytest.UsageError(str(exc)) from None
