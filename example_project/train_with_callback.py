"""The example world's two SFT stages again, with TRL's SFTTrainer and pytest-ilp's ILPCallback.

    python example_project/train_with_callback.py          # needs pip install 'pytest-ilp[trl]'

It starts from the example world's base model and data (`build_world.py` builds them first if
they are missing) and fine-tunes stage 1, then stage 2, as `build_world.py` does, but through
`SFTTrainer` with the callback checking all 480 samples at the end of every epoch. The callback
logs the learned shares through the trainer, writes the per-sample trajectory
(`artifacts/callback/stage2/ilp-trajectory.jsonl`, both stages) and a report at the end of each
stage.

Then it asks pytest-ilp about the final checkpoint twice, with the base model both times:
once with the stage-1 checkpoint as `history` (the saved-checkpoint rule), once with the
trajectory alone as `--ilp-train-log` (no history checkpoint), and prints how far the two agree
on which samples were forgotten, and how the planted forgetting samples fare. The figures go to
`artifacts/callback/callback.json`, with each epoch's training time and what the callback's
check cost at its end. The main job shows these figures when they exist, and runs the training
part itself with `pytest example_project --example-callback` (opt-in: it adds minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_world  # noqa: E402  (a sibling script, not a package)

STAGES = build_world.STAGES
#: written last, with the source hash: a folder without it is an unfinished run.
STAMP = "callback.json"


#: the SFTConfig arguments of every run here: on the CPU, in float32, seeded, no checkpoints,
#: no reports, no progress bar.
CPU_RUN: dict[str, Any] = {
    "save_strategy": "no",
    "report_to": [],
    "use_cpu": True,
    "bf16": False,
    "seed": 0,
    "disable_tqdm": True,
}


def stage_settings(size: build_world.Size, stage: str) -> dict[str, Any]:
    """The SFTConfig arguments that train `stage` as build_world.sft_stage does: its epochs,
    learning rate and batch size, linear decay, no weight decay, no gradient clipping."""
    epochs, lr = {
        "stage1": (size.stage1_epochs, size.stage1_lr),
        "stage2": (size.stage2_epochs, size.stage2_lr),
    }[stage]
    return {
        "num_train_epochs": epochs,
        "learning_rate": lr,
        "per_device_train_batch_size": size.sft_batch,
        "lr_scheduler_type": "linear",
        "weight_decay": 0.0,
        "max_grad_norm": 0.0,
    }


def epoch_clock() -> Any:
    """A callback that times each epoch's training: added before the ILP callbacks, its
    `on_epoch_end` runs before theirs, so `seconds` holds the epochs without the checks."""
    from transformers import TrainerCallback

    class EpochClock(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.started = 0.0

        def on_epoch_begin(self, *_: Any, **__: Any) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, *_: Any, **__: Any) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    return EpochClock()


def train(
    out: Path, world: Path, log: Any = print, size_name: str = "full", quiet: bool = False
) -> dict[str, Any]:
    """Fine-tune both stages from `world/base` into `out/<stage>`; return timings and the
    figures the callback logged. `quiet`: no dataset progress bars and no printed log dicts
    (the figures still go through `trainer.log` into `state.log_history`)."""
    import datasets
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from pytest_ilp.core.backends.loading import quiet_loading
    from pytest_ilp.integrations.transformers import TRAJECTORY_FILE, ILPCallback

    build_world.setup_torch(build_world.THREADS)
    if quiet:
        datasets.disable_progress_bars()
    # quiet: no "Loading weights" / "Writing model shards" bars either
    loading = quiet_loading if quiet else contextlib.nullcontext
    size = build_world.SIZES[size_name]
    records = [json.loads(line) for line in (world / "sft.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(world / "base")
    with loading():
        model = AutoModelForCausalLM.from_pretrained(world / "base", dtype=torch.float32)
    stage_data = {
        "stage1": [r for r in records if r["stage"] == "stage1"],
        "stage2": [r for r in records if r["stage"] == "stage2" or r["meta"]["replayed"]],
    }
    figures: dict[str, Any] = {"timings_s": {}, "logged": {}}
    previous = None
    for stage in STAGES:
        settings = stage_settings(size, stage)
        data = Dataset.from_list(
            [{"prompt": r["prompt"], "completion": r["completion"]} for r in stage_data[stage]]
        )
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                output_dir=str(out / stage), logging_strategy="epoch", **CPU_RUN, **settings
            ),
            train_dataset=data,
            processing_class=tokenizer,
        )
        callback = ILPCallback(
            trainer=trainer, data=world / "sft.jsonl", stage=stage, continues=previous
        )
        clock = epoch_clock()
        trainer.add_callback(clock)
        trainer.add_callback(callback)
        if quiet:
            trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        figures["timings_s"][stage] = time.perf_counter() - started
        figures["timings_s"][f"{stage} callback"] = callback.seconds
        figures["timings_s"][f"{stage} epochs"] = clock.seconds
        figures["logged"][stage] = callback.history
        with loading():
            trainer.save_model(str(out / stage / "final"))
        previous = out / stage / TRAJECTORY_FILE
        seconds = figures["timings_s"][stage]
        log(
            f"{stage}: {len(data)} samples x {settings['num_train_epochs']} epochs in "
            f"{seconds:.1f} s, of which the callback {callback.seconds:.1f} s; learned at its "
            "points: " + ", ".join(f"{h['ilp/learned']:.0%}" for h in callback.history)
        )
    return figures


def ask_pytest(out: Path, world: Path, name: str, extra: str) -> dict[str, Any]:
    """One pytest-ilp run on the final checkpoint with its own ilp.yaml; its JSON report."""
    config = out / f"{name}.yaml"
    report = out / f"{name}-report.json"
    config.write_text(
        f"checkpoint: {out / 'stage2' / 'final'}\ndata: {world / 'sft.jsonl'}\n"
        f"base: {world / 'base'}\nreport: {report}\n{extra}",
        encoding="utf-8",
    )
    (out / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--no-header",
            "-p",
            "no:cacheprovider",
            f"--rootdir={out}",
            f"-c={out / 'pytest.ini'}",
            f"--ilp-config={config}",
        ],
        cwd=out,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    document: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    return document


def agreement(out: Path, world: Path) -> dict[str, Any]:
    history = ask_pytest(
        out,
        world,
        "with-history",
        f"history:\n  stage1: {out / 'stage1' / 'final'}\n  stage2: {out / 'stage2' / 'final'}\n",
    )
    trajectory = ask_pytest(
        out, world, "with-trajectory", f"train_log: {out / 'stage2' / 'ilp-trajectory.jsonl'}\n"
    )
    planted = {
        json.loads(line)["id"]
        for line in (world / "sft.jsonl").read_text().splitlines()
        if json.loads(line)["meta"]["planted_cause"] == "forgetting"
    }

    def forgotten(report: dict[str, Any]) -> set[str]:
        return {s["id"] for s in report["samples"] if s["cause"] == "forgetting"}

    by_history, by_trajectory = forgotten(history), forgotten(trajectory)
    causes = {s["id"]: s["cause"] for s in history["samples"]}
    pairs = [(causes[s["id"]], s["cause"]) for s in trajectory["samples"]]
    # (history's cause, the trajectory's cause) of every sample they diagnose differently.
    differ = Counter(f"{a} -> {b}" for a, b in pairs if a != b)
    return {
        "forgotten_by_history": len(by_history),
        "forgotten_by_trajectory": len(by_trajectory),
        "both": len(by_history & by_trajectory),
        "history_only": sorted(by_history - by_trajectory),
        "trajectory_only": sorted(by_trajectory - by_history),
        "planted_forgetting": len(planted),
        "planted_found_by_history": len(planted & by_history),
        "planted_found_by_trajectory": len(planted & by_trajectory),
        "same_cause_all_samples": len(pairs) - sum(differ.values()),
        "differ_history_to_trajectory": dict(differ.most_common()),
        "samples": len(history["samples"]),
        "learned_final": history["summary"]["learned"],
    }


def source_hash(size_name: str = "full", seed: int = 0) -> str:
    """What the stamp depends on: this file and the world's build."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(build_world.source_hash(size_name, seed).encode())
    return digest.hexdigest()[:16]


def is_built(out: Path, size_name: str = "full") -> bool:
    try:
        stamp = json.loads((out / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp.get("source") == source_hash(size_name)


def build(
    out: Path,
    world: Path,
    log: Any = print,
    compare: bool = True,
    size_name: str = "full",
    quiet: bool = False,
) -> dict[str, Any]:
    """Train both stages with the callback into `out` (the hyperparameters of the world's
    `size_name`) and, with `compare`, ask pytest-ilp about forgetting both ways; the figures
    also go to `out/callback.json`. `quiet`: see `train`."""
    from pytest_ilp.core.atomic import write_text_atomic

    (out / STAMP).unlink(missing_ok=True)
    figures = train(out, world, log, size_name, quiet)
    if compare:
        figures["agreement"] = agreement(out, world)
        log(agreement_line(figures["agreement"]))
    stamp = {"source": source_hash(size_name), "size": size_name, **figures}
    write_text_atomic(out / STAMP, json.dumps(stamp, indent=1) + "\n")
    return figures


def agreement_line(result: dict[str, Any]) -> str:
    return (
        f"forgetting, trajectory alone vs stage-1 checkpoint as history: "
        f"{result['both']} samples diagnosed by both, {len(result['history_only'])} by history "
        f"only, {len(result['trajectory_only'])} by the trajectory only; planted forgetting "
        f"samples found {result['planted_found_by_history']}/{result['planted_forgetting']} "
        f"(history) and {result['planted_found_by_trajectory']}/{result['planted_forgetting']} "
        f"(trajectory); same cause on {result['same_cause_all_samples']}/{result['samples']} "
        "samples"
        + "".join(
            f"; {count} {pair}"
            for pair, count in result.get("differ_history_to_trajectory", {}).items()
        )
    )


def check_share(points: list[dict[str, float]], epochs: list[float]) -> float:
    """The median of each check's time over its epoch's training time, the last point left
    out (it also generates what the unlearned samples produce, for the report)."""
    pairs = list(zip(points, epochs))[:-1] or list(zip(points, epochs))
    return statistics.median(p["ilp/seconds"] / seconds for p, seconds in pairs)


def summary_lines(out: Path) -> list[str]:
    """What the main job shows of the integration (empty when it was not built)."""
    if not is_built(out):
        return []
    stamp = json.loads((out / STAMP).read_text(encoding="utf-8"))
    lines = []
    for stage, points in stamp["logged"].items():
        shares = ", ".join(f"{p['ilp/learned']:.0%}" for p in points)
        seconds = stamp["timings_s"][stage]
        callback = stamp["timings_s"][f"{stage} callback"]
        lines.append(
            f"{stage}: SFTTrainer {seconds:.1f} s, ILPCallback {callback:.1f} s of it "
            f"({check_share(points, stamp['timings_s'][f'{stage} epochs']):.0%} of an epoch); "
            f"learned at each epoch: {shares}"
        )
    lines.append(f"trajectory: {out / 'stage2' / 'ilp-trajectory.jsonl'}")
    if "agreement" in stamp:
        lines.append(agreement_line(stamp["agreement"]))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=build_world.DEFAULT_OUT)
    parser.add_argument("--out", type=Path, default=build_world.DEFAULT_OUT / "callback")
    parser.add_argument("--size", choices=sorted(build_world.SIZES), default="full")
    args = parser.parse_args(argv)
    if not build_world.is_built(args.world, args.size):
        build_world.build(args.world, args.size)
    build(args.out, args.world, size_name=args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
