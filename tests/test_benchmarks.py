"""benchmarks/scoring.py still runs end to end (in its --quick mode), so it cannot rot.

No timing is asserted here: speed is the benchmark's business, on a quiet machine. What is
asserted is that every section runs and that the verdicts it times agree with greedy
`model.generate` (and, where lm-eval is installed, that its pairs tokenize like ours).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each script in a fresh process, with its own imports

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
LM_EVAL_PYTHON = BENCHMARKS / ".work" / "venv" / "bin" / "python"


def run_benchmark(work: Path, only: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "scoring.py"),
            "--quick",
            "--threads=1",
            f"--only={only}",
            f"--work={work}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for both runs: the tiny model is built once."""
    return tmp_path_factory.mktemp("bench")


def test_quick_benchmark_runs_every_section_and_agrees_with_generate(work: Path) -> None:
    out = run_benchmark(work, "scoring,generate,matmul,overhead")
    assert "== results ==" in out
    assert "tiny: ours" in out
    assert "agreement with per-sample generate: 6/6 samples" in out
    assert "agreement with batched generate: 24/24 samples" in out
    assert "matmul peak" in out
    assert "overhead at 500 items" in out
    assert "500 passed" in out
    assert "load average" in out


def test_quick_benchmark_compares_with_lm_eval(work: Path) -> None:
    if not LM_EVAL_PYTHON.exists():
        pytest.skip(
            "lm-eval's own venv (benchmarks/.work/venv) is not set up: "
            "bash benchmarks/setup_lm_eval.sh"
        )
    out = run_benchmark(work, "lm-eval")
    assert "lm-eval pairs: 24/24 encode to our token ids" in out
    assert "lm-eval is_greedy:" in out


def test_callback_cost_benchmark_runs(tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="benchmarks/callback_cost.py trains with TRL")
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "callback_cost.py"),
            "--samples=24",
            "--epochs=1",
            "--subsets=8",
            "--threads=1",
            "--hidden=64",
            "--vocab=600",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "default (all samples)     24 samples: check" in result.stdout
    assert "sample=8                   8 samples: check" in result.stdout
    assert "target: default check <= 10% of the epoch" in result.stdout


def test_quick_criteria_benchmark_times_every_criterion_against_exact(work: Path) -> None:
    """benchmarks/criteria.py --quick (on the tiny model the runs above built) prints each
    criterion's cost as a ratio to exact, and the verdicts it timed."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "criteria.py"), "--quick", "--threads=1",
         f"--work={work}", f"--json={work / 'criteria.json'}"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== cost on 24 samples, median of 1, as a ratio to exact ==" in result.stdout
    rows = json.loads((work / "criteria.json").read_text())["rows"]
    assert [r["criterion"] for r in rows] == [
        "exact",
        "prefix:8",
        "token_accuracy:0.9",
        "nll:1.0",
        "normalized",
        "choice:mean",
        "choice:sum",
        "sampled:n=5,temperature=0.7,min_pass=0.2,seed=0",
    ]
    assert rows[0]["ratio"] == 1.0
    # A looser criterion never learns fewer samples than exact on the same model.
    learned = {r["criterion"]: r["learned"] for r in rows}
    assert learned["prefix:8"] >= learned["exact"] <= learned["normalized"]
