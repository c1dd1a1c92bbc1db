"""The hf backend's scoring pass at an earlier git revision against the working tree's.

    python benchmarks/before_after.py benchmarks/.work/models/32k-<key> [--rev REV]

Both run on the same loaded model and the benchmark's samples for it (the JSONL file beside
the model folder, written by benchmarks/scoring.py), interleaved, median of --reps; the
top-1/top-2 tokens of every target position must be identical. The default revision is the
backend before its output layer ran at target positions only and before shared prefixes.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEFORE = "5241093~1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a model folder under benchmarks/.work/models")
    parser.add_argument("--rev", default=BEFORE, help="git revision of 'before' (%(default)s)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from pytest_ilp.core.backends import BackendOptions, ScoreRequest
    from pytest_ilp.core.backends.hf import HFBackend
    from pytest_ilp.core.checkpoint import inspect_checkpoint
    from pytest_ilp.core.datafiles import load_samples
    from pytest_ilp.core.render import Rendered, RenderSettings, render_samples

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    old_source = subprocess.run(
        ["git", "show", f"{args.rev}:pytest_ilp/core/backends/hf.py"],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    old_path = HERE / ".work" / "hf_before.py"
    old_path.parent.mkdir(parents=True, exist_ok=True)
    old_path.write_text(old_source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("hf_before", old_path)
    assert spec is not None and spec.loader is not None
    old_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old_module)

    folder = args.model.resolve()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    stops = frozenset({tokenizer.eos_token_id})
    rendered = [
        r
        for r in render_samples(
            load_samples(folder.with_suffix(".jsonl")), tokenizer, RenderSettings(), stops, 512
        )
        if isinstance(r, Rendered)
    ]
    requests = [ScoreRequest(r.input_ids, r.target_start) for r in rendered]
    options = BackendOptions(device="cpu", dtype="float32")
    after = HFBackend(inspect_checkpoint(folder), options)
    before = old_module.HFBackend(inspect_checkpoint(folder), options)
    before.model = after.model  # one model in memory for both
    times: dict[str, list[float]] = {"before": [], "after": []}
    scores = {}
    for _ in range(args.reps):
        for name, backend in (("before", before), ("after", after)):
            started = time.perf_counter()
            scores[name] = backend.score(requests)
            times[name].append(time.perf_counter() - started)
    same = sum(
        a.top1_ids == b.top1_ids and a.top2_ids == b.top2_ids
        for a, b in zip(scores["before"], scores["after"])
    )
    largest = max(
        abs(x - y)
        for a, b in zip(scores["before"], scores["after"])
        for x, y in zip(a.target_logprobs, b.target_logprobs)
    )
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(
        f"{folder.name}: {len(requests)} samples, {args.rev} {b:.2f} s, working tree {a:.2f} s "
        f"(medians of {args.reps}) -> {b / a:.2f}x; top-1/top-2 identical on {same}/"
        f"{len(requests)}, largest target log-prob difference {largest:.1e}"
    )


if __name__ == "__main__":
    main()
