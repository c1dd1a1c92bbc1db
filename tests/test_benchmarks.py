"""benchmarks/scoring.py still runs end to end (in its --quick mode), so it cannot rot.

No timing is asserted here: speed is the benchmark's business, on a quiet machine. What is
asserted is that every section runs and that the verdicts it times agree with greedy
`model.generate` (and, where lm-eval is installed, that its pairs tokenize like ours).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
