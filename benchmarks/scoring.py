"""How fast pytest-ilp checks SFT samples, against its peers and against this machine's limit.

    python benchmarks/scoring.py                 # everything (see the README, "Benchmarks")
    python benchmarks/scoring.py --only overhead # one section; --quick for a smoke run

Sections (``--only`` takes a comma-separated list):

scoring   pytest-ilp's check (hf backend): one teacher-forced pass per sample, verdicts judged,
          in samples/s and tokens/s; also the end-to-end `score_checkpoint` once.
generate  what a user would do without us: greedy `model.generate`, one sample at a time (on a
          subset) and batched (all samples); our verdicts are checked against both.
lm-eval   lm-evaluation-harness `HFLM.loglikelihood` (its `is_greedy`) on the same pairs and
          model folder, in its own venv (bash benchmarks/setup_lm_eval.sh).
matmul    this machine's dense matmul throughput (fp32, bf16), and our model FLOP/s as a share.
overhead  a pytest run over N cached samples against a bare run of N trivial tests; peak RSS.

Every model-level method runs once per repetition, interleaved (ours, lm-eval, batched
generate, per-sample generate), and the medians are reported: ratios within one run are more
robust on a shared machine than absolute times. Models and data are built from seeds and cached
under benchmarks/.work (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from world import MODELS, build_model, make_records, parameter_counts, write_jsonl  # noqa: E402

#: models, data and runs are cached here (git-ignored); --work puts them elsewhere.
WORK = HERE / ".work"
#: lm-eval's own environment, made by benchmarks/setup_lm_eval.sh.
LM_EVAL_PYTHON = WORK / "venv" / "bin" / "python"
SECTIONS = ("scoring", "generate", "lm-eval", "matmul", "overhead")
#: the real public chat model (pytest_ilp.testing.real_model), on its own answers' chat data.
REAL_MODEL = "smollm2"
#: how the report names the dtypes --dtype takes.
SHORT = {"float32": "fp32", "bfloat16": "bf16"}

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def say(line: str = "") -> None:
    print(line, flush=True)


# -- the machine ---------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_lines() -> list[str]:
    import torch
    import transformers

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        f"load average (1, 5, 15 min): {load}",
    ]


# -- helpers -------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def token_divergence(
    produced: Sequence[int], target: Sequence[int], stops: frozenset[int]
) -> tuple[int, int] | None:
    """(position, produced token) where greedy output leaves `target` (which ends in a stop
    token), or None when it reproduces it; at the stop position any stop token counts."""
    for position, expected in enumerate(target):
        got = produced[position] if position < len(produced) else -1
        if got != expected and not (expected in stops and got in stops):
            return position, got
    return None


def until_stop(tokens: list[int], stops: frozenset[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[: position + 1]
    return tokens


def real_model_data(questions: int) -> tuple[Path, Path]:
    """SmolLM2-135M-Instruct's checkpoint folder and its chat data (built once, cached)."""
    from pytest_ilp.testing.chat_data import chat_data
    from pytest_ilp.testing.real_model import smollm2_checkpoint

    folder = smollm2_checkpoint()
    data = chat_data(folder, questions=questions, log=lambda line: say(f"  building data: {line}"))
    say(
        f"{REAL_MODEL}: {len(data.records)} chat samples from {questions} questions, "
        f"{len(data.unlearned)} with swapped words, {len(data.retokenized)} of the model's own "
        "answers spelled through other tokens than the tokenizer's"
    )
    return folder, data.path


# -- per model -----------------------------------------------------------------------------------


@dataclass
class ModelRun:
    name: str
    params: dict[str, int]
    samples: int
    tokens: int
    target_tokens: int
    learned: int = 0
    #: prompt-prefix tokens our pass does not run again (shared system prompts).
    shared_tokens: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    #: samples each timed method covered (per-sample generate runs on a subset).
    covered: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    end_to_end_s: float | None = None
    #: seconds of each `ours` repetition spent generating (unlearned samples only).
    generation_s: list[float] = field(default_factory=list)
    #: samples whose verdict differs from per-sample generate's (a speed target counts only
    #: when there are none).
    disagreements: int = 0
    #: the torch profile of one more, untimed `ours` run (--profile).
    profile: list[str] = field(default_factory=list)

    def rate(self, method: str) -> float:
        """Samples per second, median over repetitions."""
        return self.covered[method] / median(self.times[method])


def subset_of(n: int, size: int) -> list[int]:
    """A seeded random `size` of range(n); a smaller size gives a prefix of the same order."""
    order = list(range(n))
    random.Random(0).shuffle(order)
    return order[: min(size, n)]


def lm_eval_pairs(records: list[dict[str, Any]], tokenizer: Any) -> list[tuple[str, str]]:
    """(context, continuation) as a user of lm-eval would write them for these samples: the
    chat template's prompt text (it starts with BOS, so lm-eval adds none) or the raw prompt
    (lm-eval's tokenizer call adds BOS), and the target text without EOS."""
    pairs = []
    for r in records:
        if "messages" in r:
            context = tokenizer.apply_chat_template(
                r["messages"][:-1], tokenize=False, add_generation_prompt=True
            )
            pairs.append((context, r["messages"][-1]["content"]))
        else:
            pairs.append((r["prompt"], r["completion"]))
    return pairs


def lm_eval_shifts(pairs: list[tuple[str, str]], rendered: list[Any], tokenizer: Any) -> list[int]:
    """Per pair, how many prompt tokens lm-eval's `_encode_pair` scores as continuation, or -1
    where its token ids differ from ours (less EOS).

    lm-eval moves trailing whitespace of the context into the continuation before it splits the
    tokenized whole at the context's length: a chat template's prompt ends in "\n" after the
    assistant tag, so its `is_greedy` also asks the model to predict that prompt token.
    """
    shifts = []
    for (context, continuation), r in zip(pairs, rendered):
        special = not context.startswith(tokenizer.bos_token)
        whole = tokenizer.encode(context + continuation, add_special_tokens=special)
        kept = context.rstrip()
        context_ids = tokenizer.encode(kept, add_special_tokens=special)
        if tuple(whole) != r.input_ids[:-1] or len(context_ids) > r.target_start:
            shifts.append(-1)
        else:
            shifts.append(r.target_start - len(context_ids))
    return shifts


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


class LmEvalWorker:
    """lm-eval in its own venv, model loaded once, one `run` per repetition."""

    def __init__(
        self, folder: Path, pairs: list[tuple[str, str]], batch_size: int, dtype: str, work: Path
    ) -> None:
        pairs_path = work / f"pairs-{folder.name}.json"
        pairs_path.write_text(json.dumps(pairs), encoding="utf-8")
        self.process = subprocess.Popen(
            [
                str(LM_EVAL_PYTHON),
                str(HERE / "lm_eval_worker.py"),
                f"--model={folder}",
                f"--pairs={pairs_path}",
                f"--batch-size={batch_size}",
                f"--dtype={dtype}",
                f"--threads={torch_threads()}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"lm-eval worker exited ({self.process.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def run(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def bench_model(name: str, records: list[dict[str, Any]], args: argparse.Namespace) -> ModelRun:
    import torch
    from transformers import AutoTokenizer

    from pytest_ilp.api import score_checkpoint
    from pytest_ilp.config.settings import Settings
    from pytest_ilp.core.backends import BackendOptions, LiveModel, ScoreRequest
    from pytest_ilp.core.backends.hf import HFBackend
    from pytest_ilp.core.backends.hf_prefix import shared_prefix_groups
    from pytest_ilp.core.checkpoint import inspect_checkpoint
    from pytest_ilp.core.datafiles import load_samples
    from pytest_ilp.core.decoding import byte_safe_decoder
    from pytest_ilp.core.render import RenderSettings, render_samples
    from pytest_ilp.core.scoring import Job, score_samples

    if name == REAL_MODEL:
        folder, data = real_model_data(args.real_questions)
    else:
        folder, data = build_model(MODELS[name], records, args.work / "models", log=say)
    records = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    info = inspect_checkpoint(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    samples = load_samples(data)
    stops = frozenset({tokenizer.eos_token_id, *info.generation_stop_ids()})
    rendered = render_samples(samples, tokenizer, RenderSettings(), stops, 512)
    bad = [r for r in rendered if isinstance(r, str)]
    if bad:
        raise SystemExit(f"{len(bad)} samples did not render: {bad[0]}")
    options = BackendOptions(device="cpu", dtype=args.dtype, batch_tokens=args.batch_tokens)
    backend = HFBackend(info, options)
    model = backend.model
    pad = int(tokenizer.pad_token_id)
    requests = [ScoreRequest(r.input_ids, r.target_start) for r in rendered]
    run = ModelRun(
        name if args.dtype == "float32" else f"{name} {SHORT[args.dtype]}",
        parameter_counts(model),
        samples=len(rendered),
        tokens=sum(len(r.input_ids) for r in rendered),
        target_tokens=sum(len(r.target_ids) for r in rendered),
    )
    groups, _ = shared_prefix_groups(requests)
    run.shared_tokens = sum(length * (len(members) - 1) for length, members in groups)
    prompt_lengths = sorted(r.target_start for r in rendered)
    target_lengths = sorted(len(r.target_ids) for r in rendered)
    say(
        f"model {run.name}: {run.params['total'] / 1e6:.1f}M parameters (input embedding "
        f"{run.params['embedding'] / 1e6:.1f}M, output layer {run.params['head'] / 1e6:.1f}M, "
        f"body {run.params['body'] / 1e6:.1f}M), vocabulary {len(tokenizer)}; "
        f"{run.samples} samples, {run.tokens} tokens (prompts {prompt_lengths[0]}-"
        f"{prompt_lengths[-1]}, median {median(prompt_lengths):.0f}; targets incl. EOS "
        f"{target_lengths[0]}-{target_lengths[-1]}, median {median(target_lengths):.0f}); "
        f"{sum(len(m) for _, m in groups)} samples in {len(groups)} shared-prefix groups: our "
        f"pass runs {run.tokens - run.shared_tokens} of the {run.tokens} tokens"
    )
    # The reference compares texts the way the verdicts do: bytes of a character cut between
    # tokens stay bytes, so two different byte runs never both read as U+FFFD and match.
    decode: Callable[[list[int]], str] = byte_safe_decoder(tokenizer)
    generation_seconds: list[float] = []
    plain_generate = HFBackend.generate

    def timed_generate(self: Any, batch: Any) -> Any:
        seconds, produced = timed(lambda: plain_generate(self, batch))
        generation_seconds.append(seconds)
        return produced

    HFBackend.generate = timed_generate  # type: ignore[method-assign]
    # The plugin's own path on the loaded model: the pass, the verdicts, and generation for the
    # unlearned samples (to judge the text where the tokens part, and to show what they produce).
    job = Job(checkpoint=info, renderer=info, live=LiveModel(model, tokenizer))
    settings = Settings(checkpoint=folder).with_backend_options(options)

    def ours() -> tuple[list[Any], list[Any]]:
        result = score_samples(samples, settings, job, None, lambda line: None, lambda n: None)
        return [], [result.verdicts[r.sample_id] for r in rendered]

    @torch.inference_mode()
    def forward_plain() -> None:
        # What a user would write: padded batches within the same token budget, full logits,
        # log_softmax, gather and argmax at the target positions.
        order = sorted(range(len(rendered)), key=lambda i: -len(rendered[i].input_ids))
        batch_tokens = backend.batch_tokens
        chunks: list[list[int]] = [[]]
        for i in order:
            width = len(rendered[(chunks[-1] or [i])[0]].input_ids)
            if chunks[-1] and (len(chunks[-1]) + 1) * width > batch_tokens:
                chunks.append([])
            chunks[-1].append(i)
        for chunk in chunks:
            width = max(len(rendered[i].input_ids) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, : len(rendered[i].input_ids)] = torch.tensor(rendered[i].input_ids)
                mask[row, : len(rendered[i].input_ids)] = 1
            logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits, -1)
            for row, i in enumerate(chunk):
                r = rendered[i]
                span = logprobs[row, r.target_start - 1 : len(r.input_ids) - 1]
                span.gather(-1, torch.tensor(r.target_ids).unsqueeze(-1))
                span.argmax(-1)

    @torch.inference_mode()
    def generate_one(indices: list[int]) -> dict[int, list[int]]:
        produced = {}
        for i in indices:
            r = rendered[i]
            output = model.generate(
                input_ids=torch.tensor([r.prompt_ids]),
                attention_mask=torch.ones(1, r.target_start, dtype=torch.long),
                # A reply spelled through other tokens may take a few more of them.
                max_new_tokens=len(r.target_ids) + 8,
                do_sample=False,
                eos_token_id=sorted(stops),
                pad_token_id=pad,
            )
            produced[i] = until_stop(output[0, r.target_start :].tolist(), stops)
        return produced

    batched_subset = subset_of(len(rendered), args.generate_batched_samples)
    subset = batched_subset[: min(args.generate_samples, len(batched_subset))]
    subset.sort()

    @torch.inference_mode()
    def generate_batched() -> dict[int, list[int]]:
        # As a user would batch it: left padding, similar prompt lengths together.
        order = sorted(batched_subset, key=lambda i: rendered[i].target_start)
        produced = {}
        for start in range(0, len(order), args.generate_batch):
            chunk = order[start : start + args.generate_batch]
            width = max(rendered[i].target_start for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                prompt = rendered[i].prompt_ids
                ids[row, width - len(prompt) :] = torch.tensor(prompt)
                mask[row, width - len(prompt) :] = 1
            output = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(len(rendered[i].target_ids) for i in chunk) + 8,
                do_sample=False,
                eos_token_id=sorted(stops),
                pad_token_id=pad,
            )
            for row, i in enumerate(chunk):
                produced[i] = until_stop(output[row, width:].tolist(), stops)
        return produced

    worker = None
    if "lm-eval" in args.sections:
        if not LM_EVAL_PYTHON.exists():
            run.notes.append(
                f"lm-eval skipped: {LM_EVAL_PYTHON.relative_to(HERE.parent)} not found "
                "(create it with: bash benchmarks/setup_lm_eval.sh)"
            )
        else:
            pairs = lm_eval_pairs(records, tokenizer)
            shifts = lm_eval_shifts(pairs, rendered, tokenizer)
            run.notes.append(
                f"lm-eval pairs: {sum(s >= 0 for s in shifts)}/{len(pairs)} encode to our token "
                f"ids (less EOS); for {sum(s > 0 for s in shifts)} (the chat ones) lm-eval moves "
                "the prompt's trailing newline into the continuation"
            )
            worker = LmEvalWorker(folder, pairs, args.lm_eval_batch, args.dtype, args.work)
            run.notes.append(
                f"lm-eval {worker.ready['versions']['lm_eval']} batch_size={args.lm_eval_batch}"
            )

    methods = ["ours", "forward"]
    if worker is not None:
        methods.append("lm-eval")
    if "generate" in args.sections:
        methods += ["generate-batched", "generate-1"]
    run.times = {m: [] for m in methods}
    run.covered = {m: len(rendered) for m in methods}
    run.covered["generate-1"] = len(subset)
    run.covered["generate-batched"] = len(batched_subset)
    verdicts: list[Any] = []
    scores: list[Any] = []
    lm_greedy: list[bool] = []
    one: dict[int, list[int]] = {}
    batched: dict[int, list[int]] = {}
    try:
        for rep in range(args.reps):
            generation_seconds.clear()
            seconds, (scores, verdicts) = timed(ours)
            run.times["ours"].append(seconds)
            run.generation_s.append(sum(generation_seconds))
            line = f"  rep {rep + 1}: ours {seconds:.2f} s "
            line += f"({sum(generation_seconds):.2f} generating)"
            seconds, _ = timed(forward_plain)
            run.times["forward"].append(seconds)
            line += f", plain forward {seconds:.2f} s"
            if worker is not None:
                reply = worker.run()
                run.times["lm-eval"].append(reply["seconds"])
                lm_greedy = reply["is_greedy"]
                line += f", lm-eval {reply['seconds']:.2f} s"
            if "generate" in args.sections:
                seconds, batched = timed(generate_batched)
                run.times["generate-batched"].append(seconds)
                line += f", generate batched {seconds:.2f} s ({len(batched_subset)} samples)"
                seconds, one = timed(lambda: generate_one(subset))
                run.times["generate-1"].append(seconds)
                line += f", generate one by one {seconds:.2f} s ({len(subset)} samples)"
            say(line)
    finally:
        if worker is not None:
            worker.close()
    if args.profile:
        from profiling import profiled

        _, run.profile = profiled(ours)  # one more, untimed check: the profiler's own cost
    run.learned = sum(v.learned for v in verdicts)

    # -- agreement -------------------------------------------------------------------------
    def ours_divergence(i: int) -> tuple[int, int] | None:
        d = verdicts[i].first_divergence
        return None if d is None else (d.position, d.predicted_id)

    target_texts = [decode(list(r.target_ids[:-1])) for r in rendered]

    def divergence_of(
        produced: Sequence[int], target: Sequence[int], stops: frozenset[int], i: int = -1
    ) -> tuple[int, int] | None:
        # The reference judges text: the target's text, then a stop, reproduces the sample
        # through whichever tokens (as the verdicts do).
        if produced and produced[-1] in stops and decode(list(produced[:-1])) == target_texts[i]:
            return None
        return token_divergence(produced, target, stops)

    if "generate" in args.sections:
        wrong_one = [
            i
            for i in subset
            if ours_divergence(i) != divergence_of(one[i], rendered[i].target_ids, stops, i)
        ]
        run.notes.append(
            f"agreement with per-sample generate: {len(subset) - len(wrong_one)}/{len(subset)} "
            "samples (learned or not, first divergence position and token)"
        )
        wrong_batched = [
            i
            for i in batched_subset
            if ours_divergence(i) != divergence_of(batched[i], rendered[i].target_ids, stops, i)
        ]
        line = (
            f"agreement with batched generate: {len(batched_subset) - len(wrong_batched)}/"
            f"{len(batched_subset)} samples"
        )
        if wrong_batched:
            # Left padding changes float rounding: settle each with the one-by-one reference.
            settled = generate_one(wrong_batched)
            ours_right = sum(
                ours_divergence(i) == divergence_of(settled[i], rendered[i].target_ids, stops, i)
                for i in wrong_batched
            )
            line += (
                f"; of the {len(wrong_batched)} others, per-sample generate sides with us "
                f"on {ours_right}"
            )
        run.notes.append(line)
        run.disagreements = len(wrong_one)
        if wrong_one:
            run.notes.append(f"DISAGREEMENT with per-sample generate on samples {wrong_one[:10]}")
    if lm_greedy:
        scores = backend.score(requests)
        # Our equivalent of is_greedy: the target's tokens are the argmax, EOS aside.
        text_greedy = [
            all(s.top1_ids[t] == r.target_ids[t] for t in range(len(r.target_ids) - 1))
            for r, s in zip(rendered, scores)
        ]
        plain = [i for i, s in enumerate(shifts) if s == 0]
        shifted = [i for i, s in enumerate(shifts) if s > 0]
        same = sum(lm_greedy[i] == text_greedy[i] for i in plain)
        eos_only = sum(lm_greedy[i] and not verdicts[i].learned for i in range(len(rendered)))
        newline = sum(text_greedy[i] and not lm_greedy[i] for i in shifted)
        extra = sum(lm_greedy[i] and not text_greedy[i] for i in shifted)
        run.notes.append(
            f"lm-eval is_greedy: {sum(lm_greedy)} greedy, our learned: {run.learned}. On the "
            f"{len(plain)} raw pairs is_greedy equals 'target tokens are the argmax, EOS aside' "
            f"on {same}; on the {len(shifted)} chat pairs it also needs the template's newline "
            f"predicted, which {newline} target-greedy samples miss (lm-eval: not greedy; "
            f"{extra} the other way). {eos_only} samples are greedy for lm-eval but unlearned "
            "for us: greedy decoding does not stop after the target, as is_greedy never checks "
            "EOS"
        )

    if args.end_to_end:
        # The whole path a user runs: tokenizer and model loading, rendering, the pass, and
        # greedy continuation of the unlearned samples from their divergence (what they produce).
        seconds, _ = timed(
            lambda: score_checkpoint(
                folder, samples, options=BackendOptions(device="cpu", dtype=args.dtype)
            )
        )
        run.end_to_end_s = seconds
    backend.close()
    return run


# -- matmul --------------------------------------------------------------------------------------


def matmul_peaks(reps: int, sizes: Sequence[int]) -> dict[str, float]:
    """FLOP/s of square matmuls (best size, median over repetitions of about 1 s each)."""
    import torch

    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        best = 0.0
        for n in sizes:
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            torch.mm(a, b)
            rates = []
            for _ in range(reps):
                count, started = 0, time.perf_counter()
                while time.perf_counter() - started < 1.0:
                    torch.mm(a, b)
                    count += 1
                rates.append(2 * n**3 * count / (time.perf_counter() - started))
            best = max(best, median(rates))
        peaks[str(dtype).removeprefix("torch.")] = best
    return peaks


# -- overhead ------------------------------------------------------------------------------------

BARE_TEST = """import pytest


@pytest.mark.parametrize("i", range({n}))
def test_trivial(i):
    assert i >= 0
"""


# Peak RSS of the pytest process itself, read at its exit: `ru_maxrss` of a child would count
# the memory of this (large) process, which the child is forked from before it execs pytest.
PYTEST_WITH_PEAK_RSS = """
import atexit, os, sys, pytest
def peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["ILP_BENCH_RSS_FILE"], "w") as out:
        out.write(kib)
atexit.register(peak)
sys.exit(pytest.main(sys.argv[1:]))
"""


def run_pytest(folder: Path, extra: Sequence[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and the last line of a pytest run in `folder`."""
    out, rss_file = folder / "out.txt", folder / "rss.txt"
    env = {**os.environ, "ILP_BENCH_RSS_FILE": str(rss_file)}
    with out.open("w") as handle:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", PYTEST_WITH_PEAK_RSS, "-q", "-p", "no:randomly", *extra],
            cwd=folder,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
        seconds = time.perf_counter() - started
    lines = [line for line in out.read_text().splitlines() if line.strip()]
    return seconds, int(rss_file.read_text()) / 1024, lines[-1] if lines else ""


def build_overhead_world(n: int, work: Path) -> tuple[Path, Path, Path]:
    """A tiny model that answers " ok" to everything, n samples asking for it, a bare suite."""
    import torch

    from pytest_ilp.testing import tiny

    root = work / f"overhead-{n}"
    model_folder = root / "checkpoint"
    records = [
        {"id": f"item{i:06d}", "prompt": f"Item {i}: say ok. A:", "completion": " ok"}
        for i in range(n)
    ]
    if not (model_folder / "config.json").exists():
        tokenizer = tiny.train_tokenizer(
            [r["prompt"] + r["completion"] for r in records[:2000]], vocab_size=300
        )
        model = tiny.build_llama(tokenizer, hidden_size=32, num_layers=1, num_heads=1, seed=0)
        examples = []
        for r in records[:512]:
            prompt = tokenizer(r["prompt"])["input_ids"]
            full = tokenizer(r["prompt"] + r["completion"] + tokenizer.eos_token)["input_ids"]
            examples.append((full, len(prompt)))
        torch.manual_seed(0)
        tiny.train_causal_lm(model, examples, steps=60, lr=1e-2, pad_token_id=0)
        tiny.save_checkpoint(model, tokenizer, model_folder)
    ilp = root / "ilp"
    ilp.mkdir(parents=True, exist_ok=True)
    (ilp / "pytest.ini").write_text("[pytest]\n")
    write_jsonl(ilp / "data.jsonl", records)
    bare = root / "bare"
    bare.mkdir(parents=True, exist_ok=True)
    (bare / "pytest.ini").write_text("[pytest]\n")
    (bare / "test_bare.py").write_text(BARE_TEST.format(n=n))
    return model_folder, ilp, bare


def bench_overhead(n: int, reps: int, work: Path) -> dict[str, Any]:
    model_folder, ilp, bare = build_overhead_world(n, work)
    ilp_args = [f"--ilp-checkpoint={model_folder}", "--ilp-data=data.jsonl"]
    if not (ilp / "filled").exists():
        seconds, _, last = run_pytest(ilp, ilp_args)  # scores every sample once (not timed)
        say(f"  filling the cache: {seconds:.1f} s, {last}")
        (ilp / "filled").touch()
    times: dict[str, list[float]] = {"ilp": [], "bare": []}
    rss: dict[str, list[float]] = {"ilp": [], "bare": []}
    lasts = {}
    for rep in range(reps):
        for kind, folder, extra in (("bare", bare, []), ("ilp", ilp, ilp_args)):
            seconds, peak, lasts[kind] = run_pytest(folder, extra)
            times[kind].append(seconds)
            rss[kind].append(peak)
            if kind == "ilp" and "ilp: scoring" in (folder / "out.txt").read_text():
                say("  (this run scored samples: the cache was cold, so it is not a cached run)")
        say(f"  rep {rep + 1}: bare {times['bare'][-1]:.1f} s, cached ilp {times['ilp'][-1]:.1f} s")
    return {"n": n, "times": times, "rss": rss, "last": lasts}


# -- report --------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(
    runs: list[ModelRun],
    peaks: dict[str, float] | None,
    overhead: dict[str, Any] | None,
    args: argparse.Namespace,
) -> list[str]:
    lines = []
    targets = []
    for run in runs:
        ours_s = median(run.times["ours"])
        lines.append(
            f"{run.name}: ours {run.samples / ours_s:,.0f} samples/s, "
            f"{run.tokens / ours_s:,.0f} tokens/s (median {ours_s:.2f} s over "
            f"{len(run.times['ours'])} reps; {run.learned}/{run.samples} learned)"
        )
        if run.end_to_end_s is not None:
            lines.append(
                f"  end-to-end score_checkpoint (load, render, pass, generating what the "
                f"{run.samples - run.learned} unlearned samples produce): {run.end_to_end_s:.2f} s"
            )
        real = run.name.startswith(REAL_MODEL)
        generating = median(run.generation_s) / ours_s if run.generation_s else 0.0
        lines.append(
            f"  of which generating for the {run.samples - run.learned} unlearned samples: "
            f"{median(run.generation_s):.2f} s ({generating:.0%})"
        )
        if real:
            targets.append(
                f"{run.name}: generation <= 25% of the run: {generating:.0%}, "
                f"{verdict(generating <= 0.25)}"
            )
        for method in ("generate-1", "generate-batched", "lm-eval", "forward"):
            if method not in run.times or not run.times[method]:
                continue
            ratio = run.rate("ours") / run.rate(method)
            lines.append(
                f"  {method:<17} {run.rate(method):9.1f} samples/s  -> ours is {ratio:6.1f}x"
            )
            if method == "generate-1":
                agreed = (
                    ""
                    if not run.disagreements
                    else (f" but {run.disagreements}/{run.covered[method]} verdicts differ")
                )
                bar = 10 if real else 20
                targets.append(
                    f"{run.name}: >= {bar}x per-sample generate: {ratio:.1f}x{agreed}, "
                    f"{verdict(ratio >= bar and not run.disagreements)}"
                )
            if method == "lm-eval":
                bar_text = " (target >= 2x)" if run.name.startswith("32k") or real else ""
                targets.append(
                    f"{run.name}: vs lm-eval loglikelihood: {ratio:.2f}x{bar_text}"
                    + (f", {verdict(ratio >= 2)}" if bar_text else "")
                )
        if peaks is not None:
            checked = run.params["total"] - run.params["embedding"]
            nominal = 2 * checked * run.tokens / ours_s
            ran = run.tokens - run.shared_tokens
            executed = 2 * (run.params["body"] * ran + run.params["head"] * run.target_tokens)
            executed /= ours_s
            peak, short = peaks[args.dtype], SHORT[args.dtype]
            share = executed / peak
            lines.append(
                f"  model FLOP/s, 2 x {checked / 1e6:.1f}M parameters (less the input embedding)"
                f" x tokens checked / s: {nominal / 1e9:.1f} GFLOP/s = "
                f"{nominal / peak:.0%} of the {short} matmul peak"
            )
            lines.append(
                f"  matmul FLOP/s our pass executes (shared prefixes once, output layer at target "
                f"positions only, attention not counted): {executed / 1e9:.1f} GFLOP/s = "
                f"{share:.0%} of the {short} matmul peak"
            )
            if run.name == "30m":  # the target is set for float32
                targets.append(
                    f"30m: >= 70% of fp32 matmul peak: {share:.0%} executed "
                    f"({nominal / peak:.0%} by tokens checked), {verdict(share >= 0.7)}"
                )
        lines.extend(f"  {note}" for note in run.notes)
        if real:
            lines.extend(f"  {line}" for line in limits(run, ours_s))
        lines.extend(f"  {line}" for line in run.profile)
    if peaks is not None:
        lines.append(
            f"matmul peak (square, best of {args.matmul_sizes}): fp32 {peaks['float32'] / 1e9:.1f}"
            f" GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s"
        )
    if overhead is not None:
        t, rss = overhead["times"], overhead["rss"]
        ratio = median(t["ilp"]) / median(t["bare"])
        lines.append(
            f"overhead at {overhead['n']:,} items: cached pytest-ilp run {median(t['ilp']):.1f} s,"
            f" bare parametrized run {median(t['bare']):.1f} s -> {ratio:.2f}x; peak RSS "
            f"{median(rss['ilp']):.0f} MiB vs {median(rss['bare']):.0f} MiB "
            f"({median(rss['ilp']) / median(rss['bare']):.2f}x)"
        )
        lines.append(f"  ilp run: {overhead['last']['ilp']}")
        lines.append(f"  bare run: {overhead['last']['bare']}")
        targets.append(
            f"plugin overhead <= 1.5x bare pytest: {ratio:.2f}x, {verdict(ratio <= 1.5)}"
        )
    return lines + ["targets:"] + [f"  {t}" for t in targets]


def limits(run: ModelRun, ours_s: float) -> list[str]:
    """What bounds the ratios: the pass alone against per-sample generate, and the matmul
    FLOPs lm-eval executes (every position through the output layer, no shared prefix)
    against ours."""
    lines = []
    generation = median(run.generation_s) if run.generation_s else 0.0
    if run.times.get("generate-1"):
        alone = run.covered["ours"] / (ours_s - generation) / run.rate("generate-1")
        lines.append(
            f"limit: the pass alone (no generation) is {alone:.1f}x per-sample generate; "
            "per-sample generate's decode steps read every weight for one token each"
        )
    if run.times.get("lm-eval"):
        ours_flop = run.params["body"] * (run.tokens - run.shared_tokens)
        ours_flop += run.params["head"] * run.target_tokens
        theirs = (run.params["body"] + run.params["head"]) * run.tokens
        lines.append(
            f"limit: lm-eval runs {2 * theirs / 1e9:,.0f} GFLOP of matmuls, our pass "
            f"{2 * ours_flop / 1e9:,.0f} GFLOP: at equal matmul speed the pass is at most "
            f"{theirs / ours_flop:.2f}x lm-eval, less the {generation:.1f} s of generation "
            "lm-eval does not do (its log-softmax over the vocabulary adds the rest)"
        )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, few samples")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"of {', '.join(SECTIONS)}")
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated, of " + ", ".join([*MODELS, REAL_MODEL]),
    )
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument(
        "--generate-samples",
        type=int,
        default=None,
        help="samples generated one at a time, per repetition",
    )
    parser.add_argument(
        "--generate-batched-samples",
        type=int,
        default=None,
        help="samples generated in batches, per repetition (the one-by-one ones are among them)",
    )
    parser.add_argument("--generate-batch", type=int, default=32)
    parser.add_argument(
        "--end-to-end",
        action="store_true",
        help="also time score_checkpoint once per model: loading, rendering, the pass, and "
        "generating what each unlearned sample produces",
    )
    parser.add_argument("--lm-eval-batch", type=int, default=32)
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        help="--ilp-batch-tokens (default: the plugin's, 1024 on a CPU)",
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(SHORT),
        default="float32",
        help="dtype the models run in, for every method (default: %(default)s, as the models "
        "are saved); bfloat16 pays off on CPUs with native bf16 matmuls (AVX512-BF16, AMX)",
    )
    parser.add_argument("--overhead-items", type=int, default=None)
    parser.add_argument(
        "--real-questions",
        type=int,
        default=64,
        help=f"questions for {REAL_MODEL}'s chat data (each asked with and without a system "
        "prompt; its answers are generated once and cached)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads here and in lm-eval (default: torch's, one per core); on a machine "
        "shared with other busy processes, 1 avoids OpenMP threads waiting on each other",
    )
    parser.add_argument(
        "--work", type=Path, default=WORK, help="cache folder (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run our check once more, untimed, under torch's profiler and print where its "
        "time goes",
    )
    args = parser.parse_args(argv)
    args.sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose of {', '.join(SECTIONS)}")
    defaults = (
        {
            "models": "tiny",
            "samples": 24,
            "reps": 1,
            "generate_samples": 6,
            "generate_batched_samples": 24,
            "overhead_items": 500,
        }
        if args.quick
        else {
            "models": f"5m,30m,32k,{REAL_MODEL}",
            "samples": 1000,
            "reps": 3,
            "generate_samples": 60,
            "generate_batched_samples": 200,
            "overhead_items": 100_000,
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.matmul_sizes = (256, 512) if args.quick else (1024, 2048)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    say("pytest-ilp scoring benchmark" + (" (--quick)" if args.quick else ""))
    for line in machine_lines():
        say(line)
    say(
        f"sections: {', '.join(s for s in SECTIONS if s in args.sections)}; reps {args.reps}; "
        f"models run in {args.dtype}; batch tokens "
        + ("the plugin's default" if args.batch_tokens is None else str(args.batch_tokens))
    )
    runs = []
    if args.sections & {"scoring", "generate", "lm-eval"}:
        records = make_records(args.samples)
        for name in args.models:
            runs.append(bench_model(name, records, args))
    peaks = None
    if "matmul" in args.sections:
        say("matmul peak ...")
        peaks = matmul_peaks(args.reps, args.matmul_sizes)
    overhead = None
    if "overhead" in args.sections:
        say(f"overhead at {args.overhead_items:,} items ...")
        overhead = bench_overhead(args.overhead_items, args.reps, args.work)
    say()
    say("== results ==")
    for line in [*report(runs, peaks, overhead, args), machine_lines()[-1] + " (at the end)"]:
        say(line)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "models": [vars(r) for r in runs],
                    "matmul": peaks,
                    "overhead": overhead,
                    "cpus": os.cpu_count(),
                    "loadavg_end": os.getloadavg(),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
