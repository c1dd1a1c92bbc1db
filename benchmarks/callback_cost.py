"""What ILPCallback costs: its time as a share of the training epoch it observes.

    python benchmarks/callback_cost.py [--samples 400] [--epochs 2] [--threads 2]
    python benchmarks/callback_cost.py --world example_project/artifacts

One run of TRL's SFTTrainer on the benchmark's chat and raw samples (benchmarks/world.py: a
shared system prompt, context paragraphs, 5-40 token targets) with a seeded Llama model, or
with `--world` the example world's stage 2 as train_with_callback.py trains it (its base
model, 438 samples, its batch size, learning rate and epochs, one thread) with the callback
checking all 480 samples of the world's data; and several callbacks watching the same epochs:
the default (every epoch, all samples) and `sample=N` subsets. Every callback checks the same
weights at the same moments, so their times are comparable within the run whatever else loads the
machine; the epoch's own time is taken by a callback that runs before them. Epoch 1's point is
a plain check; the last epoch's point also generates what unlearned samples produce, for the
report. Goal: the default at most 10% of the epoch.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "example_project"))  # build_world, train_with_callback

from world import make_records, record_texts, vocabulary_corpus  # noqa: E402

GOAL = 0.10


def conversational(record: dict[str, Any]) -> dict[str, Any]:
    """TRL's conversational prompt/completion (one dataset needs one format)."""
    if "messages" in record:
        turns = record["messages"]
        return {"prompt": turns[:-1], "completion": turns[-1:]}
    return {
        "prompt": [{"role": "user", "content": record["prompt"]}],
        "completion": [{"role": "assistant", "content": record["completion"].strip()}],
    }


def world_setup(world: Path) -> tuple[Any, Any, Any, Any, dict[str, Any], str]:
    """The example world's stage 2 as train_with_callback.py trains it: (model, tokenizer,
    training dataset, the callback's data, SFTConfig settings, a description)."""
    import json

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import build_world
    from train_with_callback import stage_settings

    size = build_world.SIZES["full"]
    records = [json.loads(line) for line in (world / "sft.jsonl").read_text().splitlines()]
    stage2 = [r for r in records if r["stage"] == "stage2" or r["meta"]["replayed"]]
    dataset = Dataset.from_list(
        [{"prompt": r["prompt"], "completion": r["completion"]} for r in stage2]
    )
    tokenizer = AutoTokenizer.from_pretrained(world / "base")
    model = AutoModelForCausalLM.from_pretrained(world / "base", dtype=torch.float32)
    settings = stage_settings(size, "stage2")
    described = (
        f"the example world's stage 2 ({world}): {len(stage2)} training samples, batch "
        f"{size.sft_batch}, {size.stage2_epochs} epochs; the callbacks check the world's "
        f"{len(records)} samples"
    )
    return model, tokenizer, dataset, world / "sft.jsonl", settings, described


def synthetic_setup(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, dict[str, Any], str]:
    """The benchmark's chat and raw samples on a seeded Llama model."""
    from datasets import Dataset

    from pytest_ilp.testing import tiny

    records = [conversational(r) for r in make_records(args.samples, seed=0)]
    texts = record_texts(make_records(args.samples, seed=0)) + vocabulary_corpus(2000)
    tokenizer = tiny.train_tokenizer(texts, vocab_size=args.vocab)
    model = tiny.build_llama(
        tokenizer, hidden_size=args.hidden, num_heads=2, max_position_embeddings=512, seed=0
    )
    dataset = Dataset.from_list(records)
    settings = {
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
    }
    described = (
        f"{args.samples} samples (chat behind a shared system prompt, chat and raw with "
        f"context), batch 8, {args.epochs} epochs"
    )
    return model, tokenizer, dataset, dataset, settings, described


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--subsets", default="200,100,50")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument(
        "--world", type=Path, default=None, help="the example world's artefacts (one thread)"
    )
    args = parser.parse_args(argv)

    import datasets
    import torch
    import transformers

    from pytest_ilp.integrations.transformers import ILPCallback

    try:
        import trl
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        sys.exit("this benchmark needs TRL: pip install 'pytest-ilp[trl]'")
    from train_with_callback import CPU_RUN, epoch_clock

    datasets.disable_progress_bars()
    threads = 1 if args.world is not None else args.threads
    torch.set_num_threads(threads)
    model, tokenizer, dataset, data, settings, described = (
        world_setup(args.world) if args.world is not None else synthetic_setup(args)
    )
    with tempfile.TemporaryDirectory() as folder:
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(output_dir=folder, logging_strategy="no", **CPU_RUN, **settings),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        trainer_name = f"trl {trl.__version__} SFTTrainer"
        clock = epoch_clock()
        trainer.add_callback(clock)
        watchers: dict[str, ILPCallback] = {
            "default (all samples)": ILPCallback(
                trainer=trainer, data=data, output_dir=Path(folder) / "all"
            )
        }
        for size in (int(s) for s in args.subsets.split(",") if s):
            watchers[f"sample={size}"] = ILPCallback(
                trainer=trainer, data=data, sample=size, output_dir=Path(folder) / str(size)
            )
        for callback in watchers.values():
            trainer.add_callback(callback)
        trainer.train()

    print("ILPCallback cost benchmark")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {threads}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {trainer_name}"
    )
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"model: Llama, {parameters / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}; "
        f"{described}"
    )
    print(f"epoch times (training alone): {', '.join(f'{s:.1f} s' for s in clock.seconds)}")
    default_share = None
    for name, callback in watchers.items():
        seconds = [h["ilp/seconds"] for h in callback.history]
        shares = [s / e for s, e in zip(seconds, clock.seconds)]
        learned = [h["ilp/learned"] for h in callback.history]
        print(
            f"  {name:<22} {len(callback.samples):>5} samples: check "
            + ", ".join(f"{s:.2f} s ({r:.1%})" for s, r in zip(seconds, shares))
            + " of the epoch; learned "
            + ", ".join(f"{x:.1%}" for x in learned)
        )
        if default_share is None:
            default_share = shares[0]
    assert default_share is not None
    verdict = "met" if default_share <= GOAL else "MISSED"
    print(
        f"target: default check <= {GOAL:.0%} of the epoch it observes (epoch 1, no "
        f"generation): {default_share:.1%}, {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
