"""Thresholds: how many unlearned samples of each cause the gate tolerates.

A threshold is what `--ilp-threshold CAUSE=VALUE`, ilp.yaml's `thresholds:`, the ini key
`ilp_threshold` and the `@pytest.mark.ilp_threshold(cause=value)` marker set: the most
unlearned samples a cause (or `total`, all of them, or `regressions`, those the baseline had
learned) may have in a scope before the gate fails. The terminal table and the reports show it
as the cause's *budget*: the same thing, seen from the samples it still allows.

A threshold is a share of the samples in scope (a float in [0, 1], or text such as "2%") or a
count (an int). This module parses them from every source, merges the sources (command line >
ilp.yaml > ini, markers over all, name by name) and checks their names; `gate` applies them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_ilp.core.causes import CAUSES
from pytest_ilp.core.errors import IlpUsageError

TOTAL = "total"
REGRESSIONS = "regressions"
#: threshold names that are not causes.
AGGREGATES = (TOTAL, REGRESSIONS)

#: where the run's own thresholds come from, as error messages name them.
RUN_THRESHOLDS = "--ilp-threshold / ilp.yaml thresholds / ini ilp_threshold"

_COUNT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Threshold:
    """At most `value` counted samples: a share of the samples in scope (float) or a count (int)."""

    value: float | int

    @property
    def is_share(self) -> bool:
        return isinstance(self.value, float)

    def allows(self, count: int, samples: int) -> bool:
        if self.is_share:
            # a tolerance for shares such as 0.07 * 100 = 7.000000000000001
            return count <= self.value * samples + 1e-9
        return count <= self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.is_share else str(self.value)

    def to_dict(self) -> dict[str, float | int]:
        return {"share": self.value} if self.is_share else {"count": self.value}

    @classmethod
    def from_dict(cls, data: Any) -> Threshold:
        if isinstance(data, Mapping) and len(data) == 1:
            if "share" in data:
                return parse_threshold(float(data["share"]))
            if "count" in data:
                return parse_threshold(data["count"])
        raise ValueError(f"a budget is {{'share': 0.02}} or {{'count': 5}}, got {data!r}")


def parse_threshold(raw: Any) -> Threshold:
    """A threshold from a marker, ilp.yaml, the ini file or the command line.

    Floats are shares in [0, 1], ints are counts, and text is read the same way, with "2%"
    meaning 0.02. Raises `ValueError` saying what is wrong.
    """
    value: Any = raw
    if isinstance(raw, str):
        text = raw.strip()
        try:
            if text.endswith("%"):
                value = float(text[:-1]) / 100
            elif _COUNT.fullmatch(text):
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            raise ValueError(
                f"expected a share (0.02 or 2%) or a count of samples (5), got {raw!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a share (0.02 or 2%) or a count of samples (5), got {raw!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a count of samples must not be negative, got {raw!r}")
        return Threshold(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"a share must lie between 0 and 1 (an integer is a count of samples), got {raw!r}"
        )
    return Threshold(value)


def threshold_mapping(raw: Mapping[str, Any], where: str) -> dict[str, Threshold]:
    """Thresholds from name -> value; a bad value raises `IlpUsageError` naming where it was
    written."""
    thresholds = {}
    for name, value in raw.items():
        try:
            thresholds[str(name)] = parse_threshold(value)
        except ValueError as exc:
            raise IlpUsageError(f"{where}: {name}: {exc}") from None
    return thresholds


def threshold_pairs(pairs: Sequence[str], where: str) -> dict[str, Threshold]:
    """Thresholds from `CAUSE=VALUE` texts (the command line, the ini file)."""
    raw: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise IlpUsageError(
                f"{where}: expected CAUSE=BUDGET such as knowledge_conflict=0.02, "
                f"total=10% or regressions=0, got {pair!r}"
            )
        raw[name.strip()] = value
    return threshold_mapping(raw, where)


def merged(
    run: Mapping[str, Threshold], markers: Sequence[tuple[str, Mapping[str, Any]]]
) -> dict[str, Threshold]:
    """The thresholds of a test's samples: its `ilp_threshold` markers (given outermost first,
    so the closest wins) over the run's own, name by name."""
    thresholds = dict(run)
    for where, kwargs in markers:
        thresholds.update(threshold_mapping(kwargs, where))
    return thresholds


def valid_names(custom_causes: Iterable[str] = ()) -> tuple[str, ...]:
    """The names a threshold may have: the causes (built-in and declared custom ones), `total`
    and `regressions`."""
    return tuple(dict.fromkeys([*CAUSES, *custom_causes, *AGGREGATES]))


def check_names(names: Iterable[str], where: str, valid: Sequence[str]) -> None:
    """Raise `IlpUsageError` for a threshold that names no known cause: a misspelt name must
    not become a threshold that never applies."""
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise IlpUsageError(
            f"{where}: unknown cause(s) {', '.join(unknown)}; budgets may name "
            f"{', '.join(valid)} (a pytest_ilp_causes hook declares causes of your own)"
        )
