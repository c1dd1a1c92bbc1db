"""Where a run's results go once its tests are done: the terminal, the exit status, and the
files (JSON report, baseline, Markdown summary, `$GITHUB_STEP_SUMMARY`, HTML page,
remediation export).

Everything is taken from one `RunOutput` (this process's own, or the xdist workers'), through
the pure builders of `report` and `markdown`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_ilp.config.settings import Settings
from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.core.output import RunOutput
from pytest_ilp.report.build import build_report, relative
from pytest_ilp.report.check import ReportError, read_report
from pytest_ilp.report.html_report import write_html
from pytest_ilp.report.markdown import STEP_SUMMARY, append_step_summary, markdown_summary
from pytest_ilp.report.model import Report
from pytest_ilp.report.records import json_text
from pytest_ilp.report.terminal import (
    ConfiguredOutputs,
    closing_lines,
    summary_lines,
    timing_line,
)
from pytest_ilp.session import IlpSession
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
    gate = output.report.gate
    status = int(session.exitstatus)
    if gate is not None and not gate.passed and status == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        status = int(session.exitstatus)
    return status


def closing(
    output: RunOutput,
    settings: Settings,
    root: Path,
    written: Sequence[tuple[str, Path]],
    args: Sequence[str],
) -> list[str]:
    """The run's last lines: the verdict, what failed, the files written, what to try next."""
    gate = output.report.gate
    if gate is None:
        return []
    return closing_lines(
        gate,
        [(what, relative(path, root)) for what, path in written],
        command=next_command(args),
        configured=ConfiguredOutputs(
            report=settings.report is not None,
            export=settings.export is not None,
            baseline=settings.baseline is not None,
        ),
    )


#: a run's own command longer than this is shown as "pytest …" in the suggested next commands.
LONGEST_COMMAND = 60


def next_command(args: Sequence[str]) -> str:
    """`pytest` and the run's arguments, less its `-k` selection (the suggestions add their
    own); "pytest …" (this run's arguments) when that would be long."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "-k":
            skip = True
        elif not arg.startswith("-k"):
            kept.append(arg)
    command = shlex.join(["pytest", *kept])
    return command if len(command) <= LONGEST_COMMAND else "pytest …"


def terminal_lines(output: RunOutput, settings: Settings, root: Path, exitstatus: int) -> list[str]:
    report = output.report
    return summary_lines(
        report.summary,
        checkpoint=relative(settings.checkpoint, root),
        backend=report.backend,
        timing=timing_line(output.computed, output.cached, output.seconds, output.diagnosis_passes),
        fragile_margin=report.fragile_margin,
        gate=report.gate,
        exitstatus=exitstatus,
    )


def write_files(
    output: RunOutput, settings: Settings, root: Path, environ: Mapping[str, str]
) -> list[tuple[str, Path]]:
    """Write every file the run was asked for, and return them as (what, path) in the order
    written: the closing block announces exactly these, so a file written here is never
    written unannounced (add any new output here, through `written.append`)."""
    written: list[tuple[str, Path]] = []
    report = output.report
    if settings.report is not None:
        _write_json(settings.report, report)
        written.append(("JSON report", settings.report))
    if settings.update_baseline and settings.baseline is not None:
        _write_json(settings.baseline, updated_baseline(settings.baseline, report))
        written.append(("baseline", settings.baseline))
    text = None
    if settings.markdown is not None or environ.get(STEP_SUMMARY):
        checkpoint = relative(settings.checkpoint, root)
        text = markdown_summary(report, checkpoint)
    if settings.markdown is not None and text is not None:
        write_text_atomic(settings.markdown, text)
        written.append(("Markdown summary", settings.markdown))
    step_summary = append_step_summary(text, environ) if text is not None else None
    if step_summary is not None:
        written.append(("step summary (appended)", step_summary))
    if settings.html is not None:
        write_html(settings.html, report)
        written.append(("HTML report", settings.html))
    if settings.export is not None:
        write_text_atomic(
            settings.export, "".join(json_text(r, indent=None) + "\n" for r in output.export)
        )
        written.append(("remediation export", settings.export))
    return written


def updated_baseline(path: Path, report: Report) -> Report:
    """This run's report, plus the samples of the old baseline that this run did not check.

    A run over part of the data (`-k`, `--lf`, a shard, node ids) updates the samples it checked
    and keeps the others, as syrupy keeps the snapshots of the tests it did not run. An old
    baseline that cannot be read (or is of another schema) is replaced whole. The samples kept
    keep their verdicts but not the old run's gate decisions (this run's gate did not decide
    them), and the summary counts every sample the baseline holds.
    """
    try:
        old = read_report(path)
    except ReportError:
        return report
    checked = {record.id for record in report.samples}
    kept = [replace(record, gate=None) for record in old.samples if record.id not in checked]
    return replace(report, samples=(*report.samples, *kept))


def write_empty_report(state: IlpSession, root: Path) -> list[tuple[str, Path]]:
    """Nothing was scored (nothing selected, --collect-only, no worker output): the JSON
    report and the HTML page, when asked for, say so. Returns the files written, as
    `write_files` does."""
    settings = state.settings
    if settings.report is None and settings.html is None:
        return []
    document = build_report(
        [],
        checkpoint=settings.checkpoint,
        backend=settings.backend,
        fragile_margin=settings.fragile_margin,
        root=root,
        collection_errors=state.collection_errors,
    )
    written: list[tuple[str, Path]] = []
    if settings.report is not None:
        _write_json(settings.report, document)
        written.append(("JSON report", settings.report))
    if settings.html is not None:
        write_html(settings.html, document)
        written.append(("HTML report", settings.html))
    return written


def _write_json(path: Path, report: Report) -> None:
    write_text_atomic(path, report.to_json())
