"""How well does pytest-ilp's diagnosis recover the causes planted in the example world?

    python benchmarks/diagnosis_accuracy.py            # builds example_project/artifacts if needed

Runs `pytest example_project` (the plugin on the final checkpoint, with the base model, the
stage-1 checkpoint and the training log that example_project/ilp.yaml names), reads the JSON
report, and compares, for every unlearned sample, the diagnosed cause with the cause planted
when the data was made (`meta.planted_cause` in the SFT data; clean samples have none). The
diagnosis sees nothing a real user would not have: the plugin never reads `meta`.

Prints the confusion matrix (planted rows, diagnosed columns), per-cause precision, recall and
F1 over the five causes, and the macro-F1. Exits 1 when the target (macro-F1 >= 0.85, no cause
under 0.7) is missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tabulate import tabulate

from pytest_ilp.causes import CAUSES as ALL_CAUSES
from pytest_ilp.causes import UNDIAGNOSED

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
#: the five causes, in the plugin's own order (undiagnosed is a diagnosis, never planted).
CAUSES = tuple(cause for cause in ALL_CAUSES if cause != UNDIAGNOSED)
CLEAN = "clean"
TARGET_MACRO_F1 = 0.85
TARGET_MIN_F1 = 0.7


def run_example(report: Path, extra: list[str]) -> float:
    """Run the example through pytest; return the wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(EXAMPLE), f"--ilp-report={report}", "-q", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if not report.is_file():
        sys.stdout.write(result.stdout[-5000:] + result.stderr[-5000:])
        raise SystemExit(f"pytest wrote no report (exit code {result.returncode})")
    for line in result.stdout.splitlines():
        if line.startswith("ilp:") or line.startswith("scored "):
            print(f"  | {line}")
    return seconds


def planted_causes(data: Path) -> dict[str, str]:
    planted = {}
    for line in data.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            planted[str(record["id"])] = record["meta"]["planted_cause"] or CLEAN
    return planted


def scores(pairs: list[tuple[str, str]]) -> dict[str, tuple[float, float, float, int]]:
    """Precision, recall, F1 and support of each planted cause over (planted, diagnosed)."""
    result = {}
    for cause in CAUSES:
        true_positive = sum(1 for p, d in pairs if p == cause and d == cause)
        diagnosed = sum(1 for _, d in pairs if d == cause)
        support = sum(1 for p, _ in pairs if p == cause)
        precision = true_positive / diagnosed if diagnosed else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[cause] = (precision, recall, f1, support)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--no-cache", action="store_true", help="score afresh (pass --ilp-no-cache to pytest)"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(EXAMPLE))
    import build_world

    if not build_world.is_built(build_world.DEFAULT_OUT):
        print(f"building the example world into {build_world.DEFAULT_OUT} ...")
        build_world.build(build_world.DEFAULT_OUT)
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        seconds = run_example(report_path, ["--ilp-no-cache"] if args.no_cache else [])
        report = json.loads(report_path.read_text(encoding="utf-8"))
    planted = planted_causes(build_world.DEFAULT_OUT / "sft.jsonl")
    unlearned = [s for s in report["samples"] if s["learned"] is False]
    pairs = [(planted[s["id"]], s["cause"] or "none") for s in unlearned]

    print(
        f"\npytest example_project: {len(report['samples'])} samples, {len(unlearned)} unlearned, "
        f"{seconds:.1f} s\n"
    )
    rows_order = [*CAUSES, CLEAN]
    diagnosed_names = sorted({d for _, d in pairs} - set(CAUSES))
    columns = [*CAUSES, *diagnosed_names]
    counts = Counter(pairs)
    table = [
        [row, *(counts[(row, col)] for col in columns), sum(counts[(row, c)] for c in columns)]
        for row in rows_order
    ]
    short = {c: c.replace("_", "\n") for c in columns}
    print("planted (rows) vs diagnosed (columns), unlearned samples only:")
    print(tabulate(table, headers=["", *(short[c] for c in columns), "total"]))

    per_cause = scores(pairs)
    print()
    print(
        tabulate(
            [[c, f"{p:.2f}", f"{r:.2f}", f"{f:.2f}", n] for c, (p, r, f, n) in per_cause.items()],
            headers=["cause", "precision", "recall", "F1", "unlearned planted"],
        )
    )
    f1s = [f for _, _, f, _ in per_cause.values()]
    macro = sum(f1s) / len(f1s)
    met = macro >= TARGET_MACRO_F1 and min(f1s) >= TARGET_MIN_F1
    print(
        f"\nmacro-F1 {macro:.3f} (target >= {TARGET_MACRO_F1}), lowest F1 {min(f1s):.2f} "
        f"(target >= {TARGET_MIN_F1}): {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
