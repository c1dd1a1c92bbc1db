"""Calibrate the fragile margin on a real model: which verdicts flip between float32 and bfloat16?

    python benchmarks/fragile.py [--questions 50] [--threshold 0.1]

A learned sample is reported as fragile when its greedy token leads the runner-up by less than
`fragile_margin` nats somewhere: a near-tie that another dtype, batch shape or device may flip.
This scores SmolLM2-135M-Instruct's chat data (pytest_ilp.testing.chat_data) in float32 and in
bfloat16 with the hf backend, counts the samples whose verdict differs, and for a range of
thresholds how many of the float32-learned samples it flags and how many of the flipped ones it
catches. The issue's bar for the default: flag at least 90% of the samples that flip while
flagging at most twice as many samples as flip.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)


def verdicts_in(dtype: str, folder: Path, data: Path) -> dict[str, Any]:
    from pytest_ilp.config.settings import Settings
    from pytest_ilp.core.backends import BackendOptions
    from pytest_ilp.core.checkpoint import inspect_checkpoint
    from pytest_ilp.core.datafiles import load_samples
    from pytest_ilp.core.scoring import Job, score_samples

    info = inspect_checkpoint(folder)
    settings = Settings(
        checkpoint=folder, backend_options=BackendOptions(device="cpu", dtype=dtype)
    )
    result = score_samples(
        load_samples(data), settings, Job(info, info), None, lambda line: None, lambda n: None
    )
    verdicts = result.verdicts.values()
    return {v.sample_id: v for v in verdicts}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from pytest_ilp.testing.chat_data import chat_data
    from pytest_ilp.testing.real_model import smollm2_checkpoint

    folder = smollm2_checkpoint()
    data = chat_data(folder, questions=args.questions, log=print)
    full = verdicts_in("float32", folder, data.path)
    half = verdicts_in("bfloat16", folder, data.path)
    flipped = {i for i in full if full[i].learned != half[i].learned}
    learned = {i for i in full if full[i].learned}
    catchable = flipped & learned  # fragile is about learned samples
    print(
        f"{len(full)} samples, {len(learned)} learned in float32, {len(flipped)} verdicts flip "
        f"in bfloat16 ({len(catchable)} of them learned in float32, "
        f"{len(flipped) - len(catchable)} learned only in bfloat16)"
    )
    for i in sorted(flipped):
        print(
            f"  {i}: float32 {'learned' if full[i].learned else 'unlearned'} "
            f"margin {full[i].margin:+.3f}, bfloat16 margin {half[i].margin:+.3f}"
        )
    print("threshold  flagged  flipped caught  flagged / flipped")
    chosen = None
    for threshold in THRESHOLDS:
        flagged = {i for i in learned if full[i].margin < threshold}
        caught = len(flagged & catchable)
        share = caught / len(catchable) if catchable else 1.0
        ratio = len(flagged) / len(flipped) if flipped else float("inf")
        meets = share >= 0.9 and len(flagged) <= 2 * max(len(flipped), 1)
        if meets and chosen is None:
            chosen = threshold
        print(
            f"{threshold:9.2f}  {len(flagged):7d}  {caught:3d}/{len(catchable):<3d} ({share:.0%})"
            f"  {ratio:8.2f}{'  <- meets the bar' if meets else ''}"
        )
    print(f"smallest threshold meeting the bar: {chosen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
