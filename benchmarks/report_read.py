"""What reading a JSON report back costs (a baseline, shards to merge, a page to draw).

    python benchmarks/report_read.py                    # 100,000 samples, 15% unlearned
    python benchmarks/report_read.py --samples 10000

Builds a seeded synthetic run through the real report code (benchmarks/html_page.py's
`synthetic_report`), writes it, then times, as medians of `--repeats`: writing it
(`Report.to_json`), reading it back whole (`report.check.read_report`: JSON, the schema check,
the typed parse), the schema check alone with jsonschema-rs (what `read_report` uses), and the
same check with the pure-Python jsonschema on the first `--python-samples` records (it is too
slow for all), scaled per record. Figures are ratios within this one run; say the load average
beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from html_page import synthetic_report  # noqa: E402

from pytest_ilp.report.check import _validator, read_report, report_schema  # noqa: E402


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--python-samples", type=int, default=2_000)
    args = parser.parse_args()
    from jsonschema import Draft202012Validator

    report = synthetic_report(args.samples, 0.15)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.json"
        text = report.to_json()
        path.write_text(text, encoding="utf-8")
        document = json.loads(text)
        write = median_seconds(report.to_json, args.repeats)
        read = median_seconds(lambda: read_report(path), args.repeats)
        load = median_seconds(lambda: json.loads(path.read_text(encoding="utf-8")), args.repeats)
        validator = _validator()
        compiled = median_seconds(lambda: validator.is_valid(document), args.repeats)
        part = {**document, "samples": document["samples"][: args.python_samples]}
        python = Draft202012Validator(report_schema())
        pure = median_seconds(lambda: python.is_valid(part), 1)
        assert read_report(path).to_json() == text
    shown = len(part["samples"])
    per_record_compiled = compiled / args.samples * 1e6
    per_record_pure = pure / shown * 1e6
    print(f"report of {args.samples} samples, {len(text) / 1e6:.1f} MB; load {os.getloadavg()}")
    print(f"write (Report.to_json):               {write:7.2f} s")
    print(f"read_report (JSON + check + parse):   {read:7.2f} s")
    print(f"  of which json.loads:                {load:7.2f} s")
    print(
        f"  of which the schema (jsonschema-rs): {compiled:7.2f} s "
        f"({per_record_compiled:.1f} µs a record)"
    )
    print(
        f"the schema with pure-Python jsonschema: {per_record_pure:.0f} µs a record "
        f"(on {shown}), {per_record_pure / per_record_compiled:.0f}x jsonschema-rs: "
        f"{per_record_pure * args.samples / 1e6:.0f} s for the whole report"
    )


if __name__ == "__main__":
    main()
