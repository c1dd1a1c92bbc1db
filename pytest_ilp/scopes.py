"""Which budgets cover an item: its `ilp_threshold` markers, and the scope they decorate.

A marker's scope is what it decorates: a test function (all the samples it is parametrized
with), a class or a module (`pytestmark`). A marker added to a single item (a data-file sample,
or one parametrized case) counts for its data file or test function, so that shares are never
taken of one sample. Items without the marker share the run's own budgets, scope "".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from _pytest.nodes import Node

from pytest_ilp.markers import THRESHOLD_MARKER as MARKER


def owner(node: Node) -> str:
    """The node id of the scope a marker on `node` decorates."""
    if isinstance(node, pytest.Function):
        assert node.parent is not None
        return f"{node.parent.nodeid}::{node.originalname}"
    if isinstance(node, pytest.Item) and node.parent is not None:
        return node.parent.nodeid
    return node.nodeid


def threshold_scope(item: pytest.Item) -> tuple[str, list[tuple[str, Mapping[str, Any]]]]:
    """The item's scope key and its markers' budgets, outermost first (the closest wins)."""
    found = list(item.iter_markers_with_node(MARKER))
    if not found:
        return "", []
    markers = []
    for node, mark in reversed(found):
        where = f"@pytest.mark.{MARKER} of {owner(node)}"
        if mark.args:
            raise pytest.UsageError(
                f"{where}: budgets are keyword arguments, e.g. "
                f"{MARKER}(knowledge_conflict=0.02, total=0.1); got positional {mark.args!r}"
            )
        markers.append((where, mark.kwargs))
    return owner(found[0][0]), markers
