"""What some test files cost at two commits: wall time and CPU time, runs alternated.

    python benchmarks/suite_time.py --base d9e2dd5 tests/test_gate.py tests/test_config.py

Checks the base commit out into a temporary git worktree and runs the same pytest command there
and in this working tree, alternately (`--rounds` times each), each with its own tree first on
PYTHONPATH. CPU time (user + system of pytest and everything it started) is the figure to
compare on a machine shared with other work: wall time there mostly measures the neighbours.
The load average is printed beside each run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run(tree: Path, files: list[str], extra: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit status) of one pytest run in `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:randomly", *extra],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="test files, relative to the repository")
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pytest-args", default="", help="more pytest arguments, e.g. '-n 2'")
    args = parser.parse_args()
    extra = args.pytest_args.split()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base), args.base],
            cwd=HERE,
            check=True,
            capture_output=True,
        )
        try:
            rows = []
            for round_ in range(args.rounds):
                for label, tree in (("base", base), ("this", HERE)):
                    load = os.getloadavg()[0]
                    wall, cpu, status = run(tree, args.files, extra)
                    rows.append((round_, label, wall, cpu, status, load))
                    print(
                        f"round {round_} {label:4}  wall {wall:7.1f} s  cpu {cpu:7.1f} s  "
                        f"exit {status}  load {load:.1f}",
                        flush=True,
                    )
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base)], cwd=HERE, check=False
            )
    for label in ("base", "this"):
        cpu = sum(r[3] for r in rows if r[1] == label)
        wall = sum(r[2] for r in rows if r[1] == label)
        print(f"{label:4}: cpu {cpu:.1f} s, wall {wall:.1f} s over {args.rounds} round(s)")


if __name__ == "__main__":
    main()
