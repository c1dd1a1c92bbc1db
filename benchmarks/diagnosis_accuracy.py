"""How well does pytest-ilp's diagnosis recover the causes planted in its two worlds?

    python benchmarks/diagnosis_accuracy.py                 # both worlds, built if needed
    python benchmarks/diagnosis_accuracy.py --world example
    python benchmarks/diagnosis_accuracy.py --example-dir /tmp/ex32 --example-dir /tmp/ex1

The worlds: the example world (example_project/build_world.py: a made-up world and a tiny model
pre-trained on it) and the real-model world (benchmarks/real_world.py: SmolLM2-135M-Instruct,
real facts, fine-tuned here). All are diagnosed with the same default settings. Several
example worlds (other seeds: `build_world.py --seed 1`, their samples new to the rules) go
side by side with `--example-dir` repeated.

For each world, runs pytest on the final checkpoint with the base model, the stage-1 checkpoint
and the training log, reads the JSON report, and compares, for every unlearned sample, the
diagnosed cause with the cause planted when the data was made (`meta.planted_cause` in the SFT
data; clean samples have none). The diagnosis sees nothing a real user would not have: the
plugin never reads `meta`.

Prints, per world, the confusion matrix (planted rows, diagnosed columns), per-cause precision,
recall and F1 over the five causes, the macro-F1, how strong and weak labels fare, and the false
alarms: clean samples that are unlearned, and whether they got a strong cause, a weak one or
`undiagnosed`. Ends with the worlds side by side. Exits 1 when a world misses the target
(macro-F1 >= 0.85, no cause under 0.7).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from pytest_ilp.core.causes import CAUSES as ALL_CAUSES
from pytest_ilp.core.causes import UNDIAGNOSED

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
#: the five causes, in the plugin's own order (undiagnosed is a diagnosis, never planted).
CAUSES = tuple(cause for cause in ALL_CAUSES if cause != UNDIAGNOSED)
CLEAN = "clean"
TARGET_MACRO_F1 = 0.85
TARGET_MIN_F1 = 0.7


@dataclass(frozen=True)
class World:
    name: str
    #: the folder `pytest` runs on (its pytest.ini and ilp.yaml configure the run).
    folder: Path
    #: the SFT data with `meta.planted_cause`.
    data: Path
    #: builds the world when it is missing or stale.
    ensure: Callable[[], None]


def example_world(folder: Path | None = None) -> World:
    """The example world; `folder`: another example_project folder whose artifacts/ are built
    (a copy that someone else built, which is then only read), instead of this repository's."""
    if folder is not None:
        if not (folder / "artifacts" / "world.json").is_file():
            raise SystemExit(f"{folder}: no built example world (artifacts/world.json)")
        name = f"example {folder.resolve().name}"
        return World(name, folder, folder / "artifacts" / "sft.jsonl", lambda: None)
    sys.path.insert(0, str(EXAMPLE))
    import build_world

    def ensure() -> None:
        if not build_world.is_built(build_world.DEFAULT_OUT):
            print(f"building the example world into {build_world.DEFAULT_OUT} ...")
            build_world.build(build_world.DEFAULT_OUT)

    return World("example", EXAMPLE, build_world.DEFAULT_OUT / "sft.jsonl", ensure)


def real_world(folder: Path | None = None) -> World:
    """The real-model world, in `folder` (built there if missing or stale)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_world as real

    out = folder or real.DEFAULT_OUT
    return World("real", out, out / "sft.jsonl", lambda: real.ensure_built(out))


WORLDS: dict[str, Callable[[Path | None], World]] = {
    "example": example_world,
    "real": real_world,
}


def run_pytest(folder: Path, report: Path, extra: list[str]) -> float:
    """Run pytest-ilp on a world folder; return the wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(folder), f"--ilp-report={report}", "-q", *extra],
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


@dataclass(frozen=True)
class Outcome:
    """The figures of one world."""

    per_cause: dict[str, tuple[float, float, float, int]]
    macro: float
    #: clean samples that are unlearned: (strong cause, weak cause, undiagnosed).
    false_alarms: tuple[int, int, int]
    #: planted samples: (strong labels, of them right, weak labels, of them right).
    confidence: tuple[int, int, int, int]

    @property
    def met(self) -> bool:
        return self.macro >= TARGET_MACRO_F1 and min(
            f for _, _, f, _ in self.per_cause.values()
        ) >= (TARGET_MIN_F1)


def evaluate(report: dict[str, Any], planted: dict[str, str]) -> tuple[Outcome, list[str]]:
    """The figures of one report against the planted causes, and the lines that show them."""
    unlearned = [s for s in report["samples"] if s["learned"] is False]
    rows = [(planted[s["id"]], s.get("cause") or "none", s.get("confidence")) for s in unlearned]
    pairs = [(p, d) for p, d, _ in rows]
    lines = [f"{len(report['samples'])} samples, {len(unlearned)} unlearned", ""]
    diagnosed_names = sorted({d for _, d in pairs} - set(CAUSES))
    columns = [*CAUSES, *diagnosed_names]
    counts = Counter(pairs)
    table = [
        [row, *(counts[(row, col)] for col in columns), sum(counts[(row, c)] for c in columns)]
        for row in [*CAUSES, CLEAN]
    ]
    lines.append("planted (rows) vs diagnosed (columns), unlearned samples only:")
    lines += tabulate(
        table, headers=["", *(c.replace("_", "\n") for c in columns), "total"]
    ).splitlines()
    per_cause = scores(pairs)
    lines.append("")
    lines += tabulate(
        [[c, f"{p:.2f}", f"{r:.2f}", f"{f:.2f}", n] for c, (p, r, f, n) in per_cause.items()],
        headers=["cause", "precision", "recall", "F1", "unlearned planted"],
    ).splitlines()
    macro = sum(f for _, _, f, _ in per_cause.values()) / len(per_cause)
    clean = [(d, c) for p, d, c in rows if p == CLEAN]
    false_alarms = (
        sum(1 for d, c in clean if d != UNDIAGNOSED and c == "strong"),
        sum(1 for d, c in clean if d != UNDIAGNOSED and c != "strong"),
        sum(1 for d, _ in clean if d == UNDIAGNOSED),
    )
    planted_rows = [(p, d, c) for p, d, c in rows if p != CLEAN and d in CAUSES]
    strong = [(p, d) for p, d, c in planted_rows if c == "strong"]
    weak = [(p, d) for p, d, c in planted_rows if c != "strong"]
    confidence = (
        len(strong),
        sum(p == d for p, d in strong),
        len(weak),
        sum(p == d for p, d in weak),
    )
    outcome = Outcome(per_cause, macro, false_alarms, confidence)
    lines += [
        "",
        f"macro-F1 {macro:.3f} (target >= {TARGET_MACRO_F1}), lowest F1 "
        f"{min(f for _, _, f, _ in per_cause.values()):.2f} (target >= {TARGET_MIN_F1}): "
        f"{'met' if outcome.met else 'MISSED'}",
        f"planted samples: {confidence[0]} strong labels, {_share(confidence[1], confidence[0])} "
        f"right; {confidence[2]} weak labels, {_share(confidence[3], confidence[2])} right",
        f"false alarms: {len(clean)} clean samples unlearned: {false_alarms[0]} got a strong "
        f"cause, {false_alarms[1]} a weak one, {false_alarms[2]} undiagnosed",
    ]
    return outcome, lines


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def side_by_side(outcomes: dict[str, Outcome]) -> str:
    names = list(outcomes)
    rows: list[list[Any]] = [
        [cause, *(f"{outcomes[n].per_cause[cause][2]:.2f}" for n in names)] for cause in CAUSES
    ]
    rows.append(["macro-F1", *(f"{outcomes[n].macro:.3f}" for n in names)])
    rows.append(
        [
            "clean unlearned: strong / weak / undiagnosed",
            *("{} / {} / {}".format(*outcomes[n].false_alarms) for n in names),
        ]
    )
    return tabulate(rows, headers=["F1", *names])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", choices=sorted(WORLDS), action="append", help="default: both")
    parser.add_argument(
        "--no-cache", action="store_true", help="score afresh (pass --ilp-no-cache to pytest)"
    )
    parser.add_argument("--keep", type=Path, help="save each world's report in this folder")
    parser.add_argument(
        "--example-dir",
        type=Path,
        action="append",
        help="an example_project folder whose world is built already (default: this "
        "repository's example_project, built if needed); repeat it for several (another "
        "seed: build_world.py --seed 1 into a copy's artifacts/)",
    )
    parser.add_argument(
        "--real-dir", type=Path, help="the real-model world's folder (default: benchmarks/.work)"
    )
    args = parser.parse_args(argv)
    outcomes = {}
    worlds = [
        WORLDS[kind](folder)
        for kind in args.world or ["example", "real"]
        for folder in ((args.example_dir or [None]) if kind == "example" else [args.real_dir])
    ]
    for world in worlds:
        name = world.name
        world.ensure()
        print(f"\n== the {name} world: pytest {world.folder}")
        with tempfile.TemporaryDirectory() as tmp:
            report_path = Path(tmp) / "report.json"
            seconds = run_pytest(
                world.folder, report_path, ["--ilp-no-cache"] if args.no_cache else []
            )
            report = json.loads(report_path.read_text(encoding="utf-8"))
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"{name.replace(' ', '-')}.json").write_text(
                    report_path.read_text(encoding="utf-8"), encoding="utf-8"
                )
        outcome, lines = evaluate(report, planted_causes(world.data))
        outcomes[name] = outcome
        print(f"pytest took {seconds:.1f} s; " + "\n".join(lines))
    if len(outcomes) > 1:
        print("\n== side by side (default settings in both)\n" + side_by_side(outcomes))
    return 0 if all(o.met for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
