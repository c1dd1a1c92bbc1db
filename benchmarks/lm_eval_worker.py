"""Runs lm-evaluation-harness's `HFLM.loglikelihood` for benchmarks/scoring.py, in lm-eval's own
virtual environment (benchmarks/.work/venv, made by benchmarks/setup_lm_eval.sh).

Protocol, one JSON object per line: the worker loads the model and prints `{"ready": ...}`;
each `run` line on stdin makes it score every (context, continuation) pair once and print
`{"seconds": ..., "is_greedy": [...]}`; `quit` (or end of input) ends it. Keeping the model
loaded between repetitions lets the benchmark interleave lm-eval's repetitions with its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--pairs", required=True, help="JSON list of [context, continuation]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    import lm_eval
    import torch
    import transformers
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lm = HFLM(pretrained=args.model, device="cpu", dtype=args.dtype, batch_size=args.batch_size)
    with open(args.pairs, encoding="utf-8") as handle:
        pairs = json.load(handle)
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(c, t), idx=i)
        for i, (c, t) in enumerate(pairs)
    ]
    print(
        json.dumps(
            {
                "ready": True,
                "load_s": time.perf_counter() - started,
                "versions": {
                    "lm_eval": getattr(lm_eval, "__version__", "?"),
                    "transformers": transformers.__version__,
                    "torch": torch.__version__,
                },
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        if line.strip() != "run":
            break
        started = time.perf_counter()
        results = lm.loglikelihood(requests, disable_tqdm=True)
        seconds = time.perf_counter() - started
        print(
            json.dumps({"seconds": seconds, "is_greedy": [bool(g) for _, g in results]}),
            flush=True,
        )


if __name__ == "__main__":
    main()
