"""The pytest-ilp command line: the check without pytest, and JSON reports of earlier runs.

`python -m pytest_ilp check --ilp-checkpoint=out/final --ilp-data=data/sft.jsonl`: the whole
check (`pytest_ilp.check`), with pytest's `--ilp-*` flags, read as pytest reads them (command
line > ilp.yaml > defaults; `ilp.yaml` in the current folder unless `--ilp-config` names one),
the same summary and the same files. Exit status as pytest's: 0 when the gate passes, 1 when it
fails, 4 for bad input.

`python -m pytest_ilp merge a.json b.json -o all.json`: merge shard reports, gate the whole.
Exit status as pytest's: 0 when the gate passes on the whole, 1 when it fails, 4 for bad input.

`python -m pytest_ilp html report.json -o report.html`: the HTML page of a report (of shard
reports, merged first), the same page `--ilp-html` writes. Exit status 0, or 4 for bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_ilp.config.option_table import FLAGS
from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.report.build import relative
from pytest_ilp.report.check import ReportError, read_report
from pytest_ilp.report.html_report import write_html
from pytest_ilp.report.markdown import append_step_summary, markdown_summary
from pytest_ilp.report.merge import MergeError, merge_reports
from pytest_ilp.report.model import Report
from pytest_ilp.report.terminal import summary_lines

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 4


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_ilp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="check a checkpoint on its SFT data without pytest: pytest's --ilp-* flags, the "
        "same summary, gate and files",
    )
    for flag, arguments in FLAGS:
        check.add_argument(flag, **arguments)
    merge = commands.add_parser(
        "merge",
        help="merge the JSON reports of shards (--ilp-shard=i/n) and evaluate the budgets on the "
        "whole",
    )
    merge.add_argument(
        "reports", nargs="+", type=Path, metavar="REPORT", help="the shards' --ilp-report files"
    )
    merge.add_argument("-o", "--output", type=Path, required=True, help="the merged JSON report")
    merge.add_argument("--markdown", type=Path, help="also write a Markdown summary here")
    merge.add_argument("--html", type=Path, help="also write the HTML report page here")
    html = commands.add_parser(
        "html",
        help="write the self-contained HTML page of a JSON report (several shard reports are "
        "merged first)",
    )
    html.add_argument(
        "reports", nargs="+", type=Path, metavar="REPORT", help="an --ilp-report file (or shards)"
    )
    html.add_argument("-o", "--output", type=Path, required=True, help="the HTML page to write")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args)
    if args.command == "html":
        return _html(args.reports, args.output)
    try:
        merged = merge_reports([(str(path), read_report(path)) for path in args.reports])
    except (ReportError, MergeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    write_text_atomic(args.output, merged.to_json())
    gate = merged.gate
    checkpoint = relative(Path(merged.checkpoint), Path.cwd())
    for line in summary_lines(
        merged.summary,
        checkpoint=checkpoint,
        backend=merged.backend,
        timing=f"merged {len(args.reports)} reports into {args.output}",
        fragile_margin=merged.fragile_margin,
        gate=gate,
    ):
        print(line)
    text = markdown_summary(merged, checkpoint)
    if args.markdown is not None:
        write_text_atomic(args.markdown, text)
    if args.html is not None:
        write_html(args.html, merged)
    append_step_summary(text, os.environ)
    return EXIT_PASSED if gate is None or gate.passed else EXIT_FAILED


def _check(args: argparse.Namespace) -> int:
    """`check`: the settings from the flags and ilp.yaml, the core's check, pytest's summary
    and files."""
    # The core (torch, the backends) loads only for this command.
    from pytest_ilp.config.resolve import command_line_settings
    from pytest_ilp.core.errors import IlpError
    from pytest_ilp.core.run import check
    from pytest_ilp.report.outputs import terminal_lines, write_files

    folder = Path.cwd()
    try:
        settings = command_line_settings(args, folder)
        # The score cache a pytest run in this folder keeps (.pytest_cache/d/ilp), shared.
        cache = folder / ".pytest_cache" / "d" / "ilp" if settings.use_cache else None
        run = check(
            config=settings,
            cache_dir=cache,
            root=folder,
            log=lambda line: print(f"ilp: {line}", file=sys.stderr),
        )
    except IlpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_PASSED if run.passed else EXIT_FAILED
    for line in terminal_lines(run.output, settings, folder, status):
        print(line)
    for what, path in write_files(run.output, settings, folder, os.environ):
        print(f"  written:  {what}  {relative(path, folder)}")
    return status


def _html(reports: Sequence[Path], output: Path) -> int:
    try:
        read = [(str(path), read_report(path)) for path in reports]
        report: Report = read[0][1] if len(read) == 1 else merge_reports(read)
        write_html(output, report)
    except (ReportError, MergeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {output}: cannot write it: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    print(f"pytest-ilp: wrote {output}")
    return EXIT_PASSED


if __name__ == "__main__":
    sys.exit(main())
