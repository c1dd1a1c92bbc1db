"""Where a run's results go once its tests are done: the terminal, the exit status, and the
files (JSON report, baseline, Markdown summary, `$GITHUB_STEP_SUMMARY`, remediation export).

Everything is taken from one `RunOutput` (this process's own, or the xdist workers'), through
the pure builders of `report` and `markdown`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.atomic import write_text_atomic
from pytest_ilp.baseline import learned_by_id
from pytest_ilp.markdown import STEP_SUMMARY, markdown_summary
from pytest_ilp.report import (
    gate_of,
    json_report,
    json_text,
    relative,
    summarize,
    summary_lines,
    summary_of,
    timing_line,
)
from pytest_ilp.session import IlpSession, RunOutput
from pytest_ilp.settings import Settings
from pytest_ilp.xdist import combine


def run_output(state: IlpSession) -> RunOutput | None:
    """This process's output, or on an xdist controller the one its workers sent."""
    if state.result is not None:
        return state.output()
    if state.received:
        return combine([state.received[worker] for worker in sorted(state.received)])
    return None


def gate_exit_status(session: pytest.Session, output: RunOutput) -> int:
    """The exit status after the gate: a failed gate never exits 0 (syrupy's habit), even when
    a test that takes `ilp_sample` did not check it."""
    gate = gate_of(output.report)
    status = int(session.exitstatus)
    if gate is not None and not gate.passed and status == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        status = int(session.exitstatus)
    return status


def terminal_lines(output: RunOutput, settings: Settings, root: Path, exitstatus: int) -> list[str]:
    report = output.report
    return summary_lines(
        summary_of(report),
        checkpoint=relative(settings.checkpoint, root),
        backend=report["backend"],
        timing=timing_line(output.computed, output.cached, output.seconds, output.diagnosis_passes),
        fragile_margin=report["fragile_margin"],
        gate=gate_of(report),
        exitstatus=exitstatus,
    )


def write_files(
    output: RunOutput, settings: Settings, root: Path, environ: Mapping[str, str]
) -> None:
    report = output.report
    if settings.report is not None:
        _write_json(settings.report, report)
    if settings.update_baseline and settings.baseline is not None:
        _write_json(settings.baseline, updated_baseline(settings.baseline, report))
    text = None
    if settings.markdown is not None or environ.get(STEP_SUMMARY):
        checkpoint = relative(settings.checkpoint, root)
        text = markdown_summary(report, summary_of(report), gate_of(report), checkpoint)
    if settings.markdown is not None and text is not None:
        write_text_atomic(settings.markdown, text)
    step_summary = environ.get(STEP_SUMMARY)
    if step_summary and text is not None:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    if settings.export is not None:
        write_text_atomic(
            settings.export, "".join(json_text(r, indent=None) + "\n" for r in output.export)
        )


def updated_baseline(path: Path, report: Mapping[str, Any]) -> Mapping[str, Any]:
    """This run's report, plus the samples of the old baseline that this run did not check.

    A run over part of the data (`-k`, `--lf`, a shard, node ids) updates the samples it checked
    and keeps the others, as syrupy keeps the snapshots of the tests it did not run. An old
    baseline that cannot be read (or is of another schema) is replaced whole.
    """
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        learned_by_id(old)  # checks its shape
    except (OSError, ValueError):
        return report
    checked = {record["id"] for record in report["samples"]}
    kept = [record for record in old["samples"] if record["id"] not in checked]
    return {**report, "samples": [*report["samples"], *kept]}


def write_empty_report(state: IlpSession, root: Path) -> None:
    """Nothing was scored (nothing selected, --collect-only, no worker output): the JSON
    report, when asked for, says so."""
    settings = state.settings
    if settings.report is None:
        return
    document = json_report(
        [],
        summarize([], settings.fragile_margin),
        checkpoint=settings.checkpoint,
        backend=settings.backend,
        fragile_margin=settings.fragile_margin,
        root=root,
        collection_errors=state.collection_errors,
    )
    _write_json(settings.report, document)


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    write_text_atomic(path, json_text(document) + "\n")
