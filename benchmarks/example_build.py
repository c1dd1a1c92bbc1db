"""How the example world's build holds up on a busy machine.

    python benchmarks/example_build.py                      # thread counts, 1 competing process
    python benchmarks/example_build.py --competitors 0      # on whatever load there is
    python benchmarks/example_build.py --full 1             # one whole build on 1 thread
    python benchmarks/example_build.py --full 1 --out example_project/artifacts   # and keep it

A CI runner or a laptop running other work shares its cores: torch's intra-op threads then wait
for each other at every kernel's barrier, and a build that takes a minute on two idle cores can
take ten. This script starts `--competitors` CPU-bound processes (`while True: pass`), then

* times the same pre-training steps (the bulk of the build) on each `--threads` count, in
  float32 or with bfloat16 autocast (`2:bf16`), interleaved rep by rep, and prints their
  medians and ratios (ratios inside one run are what holds on a noisy machine, not the
  absolute seconds);
* with `--full T`, builds the whole world on T threads into a temporary folder and prints the
  build's own phase timings and planting bars.

The load average before and after is printed with the figures, so a quoted time says what load
it was measured under.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "example_project"))

import build_world


def competitors(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def pretraining_steps(config: str, steps: int, windows: list[list[int]], tokenizer: Any) -> float:
    """Seconds for `steps` pre-training steps of the full-size model: `config` is a thread
    count, with ":bf16" for bfloat16 autocast (what the build used before)."""
    import torch

    from pytest_ilp.testing import tiny

    threads, _, dtype = config.partition(":")
    build_world.setup_torch(int(threads))
    size = build_world.SIZES["full"]
    model = tiny.build_llama(
        tokenizer,
        hidden_size=size.hidden_size,
        num_layers=size.num_layers,
        num_heads=size.num_heads,
        max_position_embeddings=256,
        seed=0,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=size.pretrain_lr)
    batches = [
        windows[i : i + size.pretrain_batch] for i in range(0, len(windows), size.pretrain_batch)
    ]
    started = time.perf_counter()
    for step in range(steps):
        batch = torch.tensor(batches[step % len(batches)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def compare(configs: list[str], reps: int, steps: int) -> None:
    from pytest_ilp.testing import tiny

    size = build_world.SIZES["full"]
    rng = random.Random(0)
    world = build_world.make_world(size, rng)
    build_world.plan_sft(world, size, rng)
    docs = build_world.documents(build_world.corpus_statements(world, size, rng), rng)
    tokenizer = tiny.train_tokenizer(docs, vocab_size=size.vocab_size)
    stream: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=True)["input_ids"]:
        stream += [*ids, tokenizer.eos_token_id]
    windows = build_world.pack(stream, size.window)
    per_epoch = -(-len(windows) // size.pretrain_batch)
    print(
        f"pre-training: {per_epoch} steps per epoch x {size.pretrain_epochs} epochs; timing {steps}"
    )
    times: dict[str, list[float]] = {c: [] for c in configs}
    for rep in range(reps):
        for config in configs:
            seconds = pretraining_steps(config, steps, windows, tokenizer)
            times[config].append(seconds)
            print(f"  rep {rep + 1}: threads {config} {seconds:.1f} s   (load {load()})")
    medians = {c: statistics.median(v) for c, v in times.items()}
    best = min(medians.values())
    for config, median in medians.items():
        whole = median / steps * per_epoch * size.pretrain_epochs
        print(
            f"threads {config}: median {median:.1f} s for {steps} steps, "
            f"{median / best:.2f}x the fastest; whole pre-training about {whole:.0f} s"
        )


def full_build(threads: int, out: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        stamp = build_world.build(out or Path(tmp) / "world", threads=threads, log=print)
        print(f"whole build on {threads} thread(s): {time.perf_counter() - started:.0f} s")
    missed = [name for name, value, bar in build_world.BARS if value(stamp) < bar]
    print("planting bars: " + ("all met" if not missed else "MISSED " + ", ".join(missed)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--competitors", type=int, default=1, help="CPU-bound processes to run")
    parser.add_argument(
        "--threads", default="1,2,1:bf16", help="thread counts to compare (N:bf16: with autocast)"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="pre-training steps timed per rep")
    parser.add_argument("--full", type=int, default=None, help="build the whole world on N threads")
    parser.add_argument("--out", type=Path, default=None, help="--full: keep the build here")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {args.competitors} competing process(es); load {load()}")
    procs = competitors(args.competitors)
    try:
        if args.full is not None:
            full_build(args.full, args.out)
        else:
            compare(args.threads.split(","), args.reps, args.steps)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    print(f"load average (1, 5, 15 min) at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
