"""What one run produced: the JSON report, the remediation export and the scoring figures.
An xdist worker sends it to its controller as plain data (`to_dict`), from which the
controller writes the files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_ilp.report.model import Report


@dataclass(frozen=True)
class RunOutput:
    """The JSON report of a run, its remediation export and its scoring figures."""

    report: Report
    export: list[dict[str, Any]]
    #: samples scored on the checkpoint under test, read from the cache, and the seconds it took.
    computed: int
    cached: int
    seconds: float
    #: the same figures for each base and history checkpoint scored for diagnosis, in order:
    #: `{"checkpoint": name, "computed": n, "cached": n, "seconds": s}`.
    diagnosis_passes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": self.report.to_dict(),
            "export": self.export,
            "computed": self.computed,
            "cached": self.cached,
            "seconds": self.seconds,
            "diagnosis_passes": self.diagnosis_passes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunOutput:
        """What `to_dict` wrote, in a process of the same run (not checked: it is no file)."""
        return cls(**{**data, "report": Report.from_dict(data["report"])})
