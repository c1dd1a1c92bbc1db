"""What having pytest-ilp installed costs a pytest run that does not use it.

    python benchmarks/plugin_import.py                 # median of 7 runs each way
    python benchmarks/plugin_import.py --runs 15
    python benchmarks/plugin_import.py --tree /tmp/old --tree .   # two versions, alternately
    python benchmarks/plugin_import.py --alone         # pytest-ilp the only plugin
    python benchmarks/plugin_import.py --no-bytecode   # every run compiles the package

pytest loads the plugin (the `pytest11` entry point) on every run of every project that has it
installed. This runs a one-test project with no checkpoint configured, alternately with the
plugin and with `-p no:ilp`, in fresh processes, and prints the median wall time of each and
their difference, with two estimates less swayed by a busy machine's slow runs (the median of
the differences of each pair of runs, and the difference of the fastest runs); then the median
time a fresh interpreter takes to import the entry module after pytest, and the modules of the
package, and the third-party ones, that this import loads. Alternating the runs keeps a change
in the machine's load from favouring one side (each side goes first every other round); the
load average is printed beside the figures.

Each `--tree` (a checkout of this repository) is put first on `PYTHONPATH` in turn, and the
trees' runs alternate too, so that two versions are compared in the same conditions.

`--alone` runs pytest without the other plugins of the environment (`PYTEST_DISABLE_PLUGIN_
AUTOLOAD`), loading pytest-ilp with `-p pytest_ilp.plugin` on one side and an empty module with
`-p` on the other: a project whose only plugin is pytest-ilp, and a shorter one-test run (half
of one with this environment's plugins), so that a difference of a few milliseconds stands out
more from the noise.

The runs keep their bytecode in a temporary `PYTHONPYCACHEPREFIX` (written by one warm-up run
of each side), as an installed package keeps it in its `__pycache__`, whatever
`PYTHONDONTWRITEBYTECODE` says; `--no-bytecode` sets that variable instead, so that every run
compiles each module that has no bytecode beside it (the package's, in a checkout): the
conditions of this project's machines, which set it.
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

#: importing the entry module in a fresh interpreter: how long it takes after pytest, and what
#: it loads (the package's modules, then third-party ones).
PROBE = """
import sys, time
before = set(sys.modules)
import pytest
pytest_modules = set(sys.modules) - before
start = time.perf_counter()
import pytest_ilp.plugin
print(time.perf_counter() - start)
loaded = set(sys.modules) - before - pytest_modules
print(" ".join(sorted(m for m in loaded if m.startswith("pytest_ilp"))))
print(" ".join(sorted({m.split(".")[0] for m in loaded if not m.startswith(("pytest_ilp", "_"))}
                      - set(sys.stdlib_module_names))))
"""


def environment(tree: Path | None, bytecode: Path | None, alone: bool) -> dict[str, str]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    if bytecode is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode)
    if alone:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


def one_run(project: Path, extra: list[str], env: dict[str, str]) -> float:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return seconds


def probe(project: Path, env: dict[str, str]) -> list[str]:
    command = [sys.executable, "-c", PROBE]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"importing pytest_ilp.plugin failed:\n{done.stderr}")
    return [*done.stdout.splitlines(), "", ""][:3]


def loads() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        help="a checkout to measure (repeatable; default: the pytest_ilp this Python imports)",
    )
    parser.add_argument("--alone", action="store_true", help="no other pytest plugin")
    parser.add_argument(
        "--no-bytecode", action="store_true", help="compile every module without bytecode"
    )
    args = parser.parse_args(argv)
    trees: list[Path | None] = [t.resolve() for t in args.tree] if args.tree else [None]
    # with the plugin, without it
    if args.alone:
        # `-p NAME` looks NAME up among the entry points of every installed distribution when
        # autoloading is off: both sides pay that, one for an empty module.
        sides = (["-p", "pytest_ilp.plugin"], ["-p", "empty_plugin"])
    else:
        sides = ([], ["-p", "no:ilp"])
    with tempfile.TemporaryDirectory(prefix="ilp-plugin-import-") as folder:
        project = Path(folder) / "project"
        project.mkdir()
        (project / "test_one.py").write_text(TEST)
        (project / "pytest.ini").write_text("[pytest]\n")
        (project / "empty_plugin.py").write_text("")
        envs = [
            environment(tree, None if args.no_bytecode else Path(folder) / str(i), args.alone)
            for i, tree in enumerate(trees)
        ]
        first_load = loads()
        for env in envs:
            for extra in sides:
                one_run(project, extra, env)  # warm the file cache and write the bytecode
        times: dict[tuple[int, int], list[float]] = {}
        probes: dict[int, list[list[str]]] = {}
        for turn in range(args.runs):
            for i, env in enumerate(envs):
                # Each side goes first every other round: a run may slow the one after it.
                for s in (0, 1) if turn % 2 == 0 else (1, 0):
                    times.setdefault((i, s), []).append(one_run(project, sides[s], env))
                probes.setdefault(i, []).append(probe(project, env))
    print(f"load average before and after the runs: {first_load} / {loads()}")
    print(
        "bytecode: " + ("none (every run compiles)" if args.no_bytecode else "cached"),
        "; other plugins: " + ("none (--alone)" if args.alone else "this environment's"),
        sep="",
    )
    without = "without it" if args.alone else "-p no:ilp"
    for i, tree in enumerate(trees):
        print(f"\n{tree or 'the pytest_ilp this Python imports'}")
        with_it, without_it = times[i, 0], times[i, 1]
        a, b = statistics.median(with_it), statistics.median(without_it)
        paired = statistics.median(x - y for x, y in zip(with_it, without_it))
        print(
            f"one-test run, median of {args.runs}: with the plugin {a:.3f} s, {without} {b:.3f} s"
        )
        print(
            f"the plugin adds {1000 * (a - b):+.0f} ms (median of the paired differences: "
            f"{1000 * paired:+.0f} ms; fastest run of each side: "
            f"{1000 * (min(with_it) - min(without_it)):+.0f} ms)"
        )
        imported = statistics.median(float(p[0]) for p in probes[i])
        _, ours, others = probes[i][-1]
        print(f"importing the entry module after pytest: {1000 * imported:.1f} ms (median)")
        print(f"package modules loaded: {len(ours.split())}: {ours}")
        print(f"third-party modules loaded besides pytest's: {others or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
