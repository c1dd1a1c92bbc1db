"""Calibrate the fragile margin on a real model: which verdicts flip between float32 and bfloat16?

    python benchmarks/fragile.py [--questions 64] [--bfloat16 emulated|native|both]

A learned sample is reported as fragile when its greedy token leads the runner-up by less than
`fragile_margin` nats somewhere: a near-tie that another dtype, batch shape or device may flip.
This scores SmolLM2-135M-Instruct's chat data (pytest_ilp.testing.chat_data) in float32 and in
bfloat16 with the hf backend, counts the samples whose verdict differs, and for a range of
thresholds how many of the float32-learned samples it flags and how many of the flipped ones it
catches. The issue's bar for the default: flag at least 90% of the samples that flip while
flagging at most twice as many samples as flip.

bfloat16 on a CPU without AVX-512 BF16 (this project's machine has AVX2 only) runs its matmuls
7-8x slower than float32, too slow for the whole set on a shared machine. `--bfloat16 emulated`
therefore runs float32 kernels on bfloat16 numbers: the weights rounded to bfloat16, and every
tensor an operation of the model returns rounded to bfloat16 (what bfloat16 kernels store:
they accumulate in float32 and round their outputs). `--bfloat16 both` also scores the first
`--native-samples` samples in real bfloat16 and prints how often the emulation agrees with it.
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


def verdicts_in(
    dtype: str, folder: Path, data: Path, emulated: bool = False, limit: int | None = None
) -> dict[str, Any]:
    """Verdicts of the first `limit` samples (all by default), scored in `dtype`; `emulated`:
    in float32 on bfloat16-rounded numbers (see the module's docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_ilp.config.settings import Settings
    from pytest_ilp.core.backends import LiveModel
    from pytest_ilp.core.checkpoint import inspect_checkpoint
    from pytest_ilp.core.datafiles import load_samples
    from pytest_ilp.core.scoring import Job, score_samples

    info = inspect_checkpoint(folder)
    settings = Settings(checkpoint=folder, device="cpu", dtype=dtype)
    samples = load_samples(data)[:limit]
    job = Job(info, info)
    if emulated:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
        model = model.float().eval()  # bfloat16 weights, held in float32
        round_outputs_to_bfloat16(model)
        job = Job(info, info, live=LiveModel(model, AutoTokenizer.from_pretrained(folder)))
    result = score_samples(samples, settings, job, None, lambda line: None, lambda n: None)
    verdicts = result.verdicts.values()
    return {v.sample_id: v for v in verdicts}


def round_outputs_to_bfloat16(model: Any) -> None:
    """While `model` runs, round every float32 tensor that a torch operation returns to the
    nearest bfloat16 (a TorchFunctionMode entered and left by forward hooks on the model)."""
    import torch
    from torch.overrides import TorchFunctionMode

    def rounded(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
            return value.to(torch.bfloat16).to(torch.float32)
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(rounded(v) for v in value)
        if isinstance(value, tuple):  # torch's named tuples (topk, max)
            return type(value)(*(rounded(v) for v in value))
        return value

    class Rounding(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            return rounded(func(*args, **(kwargs or {})))

    modes: list[Any] = []

    def enter(module: Any, inputs: Any) -> None:
        modes.append(Rounding())
        modes[-1].__enter__()

    def leave(module: Any, inputs: Any, output: Any) -> None:
        modes.pop().__exit__(None, None, None)

    model.register_forward_pre_hook(enter)
    model.register_forward_hook(leave)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=None, help="default: all")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bfloat16", choices=("emulated", "native", "both"), default="emulated")
    parser.add_argument("--native-samples", type=int, default=8)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from pytest_ilp.testing.chat_data import QUESTIONS, chat_data
    from pytest_ilp.testing.real_model import smollm2_checkpoint

    folder = smollm2_checkpoint()
    data = chat_data(folder, questions=args.questions or len(QUESTIONS), log=print)
    print(f"load average at the start: {Path('/proc/loadavg').read_text().split()[:3]}")
    full = verdicts_in("float32", folder, data.path)
    if args.bfloat16 == "native":
        half = verdicts_in("bfloat16", folder, data.path)
    else:
        half = verdicts_in("float32", folder, data.path, emulated=True)
    if args.bfloat16 == "both":
        native = verdicts_in("bfloat16", folder, data.path, limit=args.native_samples)
        same = sum(native[i].learned == half[i].learned for i in native)
        print(
            f"emulated vs native bfloat16 on the first {len(native)} samples: {same} verdicts "
            "equal; margins (emulated / native): "
            + ", ".join(f"{half[i].margin:+.3f}/{native[i].margin:+.3f}" for i in native)
        )
    print(f"bfloat16: {'native' if args.bfloat16 == 'native' else 'emulated'}")
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
