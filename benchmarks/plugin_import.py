"""What having pytest-ilp installed costs a pytest run that does not use it.

    python benchmarks/plugin_import.py            # median of 7 runs each way
    python benchmarks/plugin_import.py --runs 15

pytest loads the plugin (the `pytest11` entry point) on every run of every project that has it
installed. This runs a one-test project with no checkpoint configured, alternately with the
plugin and with `-p no:ilp`, in fresh processes, and prints the median wall time of each and
their difference; then the modules of the package, and the third-party ones, that loading the
plugin imports. Alternating the runs keeps a change in the machine's load from favouring one
side; the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = "def test_one():\n    assert 1 + 1 == 2\n"

#: what importing the entry module loads, as seen from a fresh interpreter.
PROBE = """
import sys
before = set(sys.modules)
import pytest
pytest_modules = set(sys.modules) - before
import pytest_ilp.plugin
loaded = set(sys.modules) - before - pytest_modules
print(" ".join(sorted(m for m in loaded if m.startswith("pytest_ilp"))))
print(" ".join(sorted({m.split(".")[0] for m in loaded if not m.startswith(("pytest_ilp", "_"))}
                      - set(sys.stdlib_module_names))))
"""


def one_run(project: Path, extra: list[str]) -> float:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=project, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ilp-plugin-import-") as folder:
        project = Path(folder)
        (project / "test_one.py").write_text(TEST)
        (project / "pytest.ini").write_text("[pytest]\n")
        one_run(project, [])  # warm the file cache and the bytecode of both sides
        one_run(project, ["-p", "no:ilp"])
        with_plugin, without = [], []
        for _ in range(args.runs):
            with_plugin.append(one_run(project, []))
            without.append(one_run(project, ["-p", "no:ilp"]))
        probe = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=project, capture_output=True, text=True, check=True
        )
    ours, others = [*probe.stdout.splitlines(), "", ""][:2]
    a, b = statistics.median(with_plugin), statistics.median(without)
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"one-test run, median of {args.runs}: with the plugin {a:.3f} s, -p no:ilp {b:.3f} s")
    print(f"the plugin adds {1000 * (a - b):+.0f} ms")
    print(f"package modules loaded: {len(ours.split())}: {ours}")
    print(f"third-party modules loaded besides pytest's: {others or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
