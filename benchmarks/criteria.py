"""What each criterion costs: the same samples, the same model, each criterion's time as a
ratio to `exact`.

    python benchmarks/criteria.py                  # 1,000 samples on the 5m model
    python benchmarks/criteria.py --quick          # smoke run: tiny model, 24 samples

Every criterion is timed end to end through `pytest_ilp.api.score_checkpoint` (load, render,
the batched pass, then whatever the criterion adds: the distractors of `choice`, the greedy
output of `normalized`, the draws of `sampled`; and, as in a pytest run, the generation that
shows what each unlearned sample produces). The criteria run interleaved within each
repetition and the medians are compared, so the ratios hold on a shared machine. Each record
gets three distractors (its target with a word changed, with its last word dropped, and with
its words reversed) so that `choice` has options to compare. Models and data come from
benchmarks/world.py and are cached under benchmarks/.work.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from world import MODELS, build_model, make_records, write_jsonl  # noqa: E402

WORK = HERE / ".work"
CRITERIA = (
    "exact",
    "prefix:8",
    "token_accuracy:0.9",
    "nll:1.0",
    "normalized",
    "choice:mean",
    "choice:sum",
    "sampled:n=5,temperature=0.7,min_pass=0.2,seed=0",
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def say(line: str = "") -> None:
    print(line, flush=True)


def target_of(record: dict[str, Any]) -> str:
    return record["messages"][-1]["content"] if "messages" in record else record["completion"]


def with_distractors(record: dict[str, Any], index: int) -> dict[str, Any]:
    """The record with three wrong responses that differ from its target."""
    rng = random.Random(index)
    target = target_of(record)
    words = target.split(" ")
    changed = list(words)
    spot = rng.randrange(len(changed))
    changed[spot] = changed[spot][::-1] + "x"
    wrong = [" ".join(changed), " ".join(words[:-1]) or "no", " ".join(reversed(words)) + " ."]
    lead = " " if target.startswith(" ") else ""
    wrong = [lead + w.lstrip() for w in wrong]
    return {**record, "distractors": [w for w in dict.fromkeys(wrong) if w != target] or ["x"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 24 samples, 1 rep")
    parser.add_argument("--model", default=None, help=f"of {', '.join(MODELS)} (default 5m)")
    parser.add_argument("--samples", type=int, default=None, help="default 1000")
    parser.add_argument("--reps", type=int, default=None, help="default 2")
    parser.add_argument(
        "--criteria",
        default=";".join(CRITERIA),
        help="criteria to time, ';'-separated (the first is the one ratios are taken to)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    model = args.model or ("tiny" if args.quick else "5m")
    samples = args.samples or (24 if args.quick else 1000)
    reps = args.reps or (1 if args.quick else 2)
    criteria = [c.strip() for c in args.criteria.split(";") if c.strip()]

    import torch

    from pytest_ilp.api import read_samples, score_checkpoint
    from pytest_ilp.core.backends import BackendOptions

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    say("pytest-ilp criteria benchmark" + (" (--quick)" if args.quick else ""))
    say(f"python {sys.version.split()[0]}, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    folder, data = build_model(MODELS[model], make_records(samples), args.work / "models", say)
    records = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    path = write_jsonl(
        args.work / f"criteria-{folder.name}.jsonl",
        [with_distractors(r, i) for i, r in enumerate(records)],
    )
    loaded = read_samples(path)
    say(f"model {model} ({folder.name}), {len(loaded)} samples, reps {reps}")
    options = BackendOptions(device="cpu")
    times: dict[str, list[float]] = {c: [] for c in criteria}
    learned: dict[str, int] = {}
    for rep in range(reps):
        for criterion in criteria:
            started = time.perf_counter()
            verdicts = score_checkpoint(folder, loaded, options=options, criterion=criterion)
            seconds = time.perf_counter() - started
            times[criterion].append(seconds)
            learned[criterion] = sum(v.learned for v in verdicts.values())
            say(f"  rep {rep + 1}: {criterion}: {seconds:.2f} s, {learned[criterion]} learned")
    exact = statistics.median(times[criteria[0]])
    say("")
    say(f"== cost on {len(loaded)} samples, median of {reps}, as a ratio to {criteria[0]} ==")
    rows = []
    for criterion in criteria:
        median = statistics.median(times[criterion])
        rows.append(
            {
                "criterion": criterion,
                "seconds": median,
                "ratio": median / exact,
                "learned": learned[criterion],
            }
        )
        say(
            f"{criterion:50s} {median:8.2f} s  {median / exact:6.2f}x  "
            f"{learned[criterion]:5d}/{len(loaded)} learned"
        )
    say(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"model": model, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
