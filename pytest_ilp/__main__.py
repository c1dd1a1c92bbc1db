"""`python -m pytest_ilp merge a.json b.json -o all.json`: merge shard reports, gate the whole.

Exit status as pytest's: 0 when the gate passes on the whole, 1 when it fails, 4 for bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_ilp.atomic import write_text_atomic
from pytest_ilp.markdown import STEP_SUMMARY, markdown_summary
from pytest_ilp.merge import MergeError, merge_reports
from pytest_ilp.report import gate_of, json_text, relative, summary_lines, summary_of

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 4


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_ilp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
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
    args = parser.parse_args(argv)
    try:
        merged = merge_reports([(str(path), _read(path)) for path in args.reports])
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    write_text_atomic(args.output, json_text(merged) + "\n")
    summary, gate = summary_of(merged), gate_of(merged)
    checkpoint = relative(Path(merged["checkpoint"]), Path.cwd())
    for line in summary_lines(
        summary,
        checkpoint=checkpoint,
        backend=merged["backend"],
        timing=f"merged {len(args.reports)} reports into {args.output}",
        fragile_margin=merged["fragile_margin"],
        gate=gate,
    ):
        print(line)
    text = markdown_summary(merged, summary, gate, checkpoint)
    if args.markdown is not None:
        write_text_atomic(args.markdown, text)
    if os.environ.get(STEP_SUMMARY):
        with open(os.environ[STEP_SUMMARY], "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return EXIT_PASSED if gate is None or gate.passed else EXIT_FAILED


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MergeError(f"{path}: cannot read it: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MergeError(f"{path}: not a JSON report ({exc})") from None


if __name__ == "__main__":
    sys.exit(main())
