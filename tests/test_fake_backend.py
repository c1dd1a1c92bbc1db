"""The fake backend: a table of answers that scores, generates and samples consistently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.core.backends import (
    BackendOptions,
    GenerateRequest,
    SampleRequest,
    ScoreRequest,
    describe_backend,
    load_backend,
)
from pytest_ilp.core.backends.fake import ANSWERS_FILE
from pytest_ilp.core.checkpoint import inspect_checkpoint
from pytest_ilp.core.render import Rendered, RenderSettings, render_samples
from pytest_ilp.core.samples import sample_from_record
from pytest_ilp.testing import tiny
from pytest_ilp.testing.fake import write_fake_checkpoint

from conftest import write_jsonl

ANSWERS = [
    {"prompt": "Q: colour of Kalo? A:", "completion": " Kalo is red."},
    {"prompt": "Q: colour of Mira? A:", "completion": " Mira is blue.", "top_logprob": -0.7},
    {
        "messages": [
            {"role": "user", "content": "colour of Tuve?"},
            {"role": "assistant", "content": "Tuve is green."},
        ]
    },
]
#: what the data asks: Kalo as answered, Mira otherwise, Tuve (chat) as answered, and a prompt
#: the table does not hold.
DATA = [
    {"id": "kalo", "prompt": "Q: colour of Kalo? A:", "completion": " Kalo is red."},
    {"id": "mira", "prompt": "Q: colour of Mira? A:", "completion": " Mira is grey."},
    {"id": "tuve", "messages": ANSWERS[2]["messages"]},
    {"id": "zorp", "prompt": "Q: colour of Zorp? A:", "completion": " Zorp is red."},
]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [
        f"Q: colour of {n}? A: {n} is {c}."
        for n in ("Kalo", "Mira", "Tuve", "Zorp")
        for c in ("red", "blue", "green", "grey")
    ]
    tokenizer = tiny.train_tokenizer(texts, vocab_size=300)
    return write_fake_checkpoint(tmp_path_factory.mktemp("fake") / "ckpt", tokenizer, ANSWERS)


def rendered(checkpoint: Path) -> dict[str, Rendered]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    samples = [sample_from_record(r, Path("data.jsonl"), n) for n, r in enumerate(DATA, 1)]
    stop = frozenset({tokenizer.eos_token_id})
    results = render_samples(samples, tokenizer, RenderSettings(), stop, None)
    return {s.id: r for s, r in zip(samples, results) if isinstance(r, Rendered)}


def test_one_pass_argmax_equals_greedy_generation_for_every_sample(fake: Path) -> None:
    checkpoint = inspect_checkpoint(fake)
    backend = load_backend("hf", checkpoint, BackendOptions())
    eos = checkpoint.config["eos_token_id"]
    for sample_id, sample in rendered(fake).items():
        (scores,) = backend.score([ScoreRequest(sample.input_ids, sample.target_start)])
        one_pass = scores.top1_ids == sample.target_ids
        (greedy,) = backend.generate(
            [GenerateRequest(sample.prompt_ids, len(sample.target_ids) + 5, frozenset({eos}))]
        )
        assert one_pass == (greedy == sample.target_ids), sample_id
        assert one_pass == (sample_id in ("kalo", "tuve")), sample_id
        if sample_id == "zorp":  # a prompt the table does not hold: EOS at once
            assert greedy == (eos,)


def test_the_tables_log_probabilities_are_the_models(fake: Path) -> None:
    backend = load_backend("hf", inspect_checkpoint(fake), BackendOptions())
    samples = rendered(fake)
    kalo, mira = (samples[i] for i in ("kalo", "mira"))
    (kalo_scores, mira_scores) = backend.score(
        [ScoreRequest(s.input_ids, s.target_start) for s in (kalo, mira)]
    )
    assert set(kalo_scores.target_logprobs) == {-0.05}  # the default top log-probability
    assert mira_scores.top1_logprobs[0] == -0.7  # the record's own
    wrong = mira_scores.target_logprobs[-3]  # " grey" where the table says " blue"
    assert wrong == -12.0 and mira_scores.top2_logprobs[-3] == -3.5


def test_samples_are_drawn_from_the_same_distributions_reproducibly(fake: Path) -> None:
    backend = load_backend("hf", inspect_checkpoint(fake), BackendOptions())
    kalo = rendered(fake)["kalo"]
    request = SampleRequest(kalo.prompt_ids, 8, 1.0, 3, 20, frozenset({kalo.input_ids[-1]}))
    first, again = backend.sample([request]), backend.sample([request])
    assert first == again
    # at temperature 1 the answer's tokens are drawn with probability 0.95 each: most
    # completions are the answer itself
    assert sum(c == kalo.target_ids for c in first[0]) >= 4
    cold = backend.sample([SampleRequest(kalo.prompt_ids, 4, 0.05, 3, 20, request.stop_ids)])
    assert cold[0] == [kalo.target_ids] * 4


def test_a_fake_checkpoint_picks_its_backend_whatever_the_option_says(fake: Path) -> None:
    assert describe_backend("hf", inspect_checkpoint(fake), BackendOptions()) == (
        "fake cpu float32"
    )


def test_a_run_scores_the_table_and_its_content_keys_the_cache(
    pytester: pytest.Pytester, fake: Path
) -> None:
    checkpoint = shutil.copytree(fake, pytester.path / "ckpt")
    write_jsonl(pytester.path / "data.jsonl", DATA)
    args = ("--ilp-checkpoint=ckpt", "--ilp-data=data.jsonl", "-rA", "-p", "no:randomly")
    first = pytester.runpytest(*args, "--ilp-report=r.json")
    first.assert_outcomes(passed=2, failed=2)
    first.stdout.fnmatch_lines(["checkpoint ckpt (fake cpu float32)", "*; 0 from cache"])
    report: dict[str, Any] = json.loads((pytester.path / "r.json").read_text())
    produced = {s["id"]: s["produced"] for s in report["samples"]}
    assert produced == {"kalo": None, "mira": " Mira is blue.", "tuve": None, "zorp": ""}
    pytester.runpytest(*args).stdout.fnmatch_lines(["scored 0 samples*; 4 from cache"])
    # A table written by hand (no token ids): the backend renders it; Mira's answer changes.
    plain = [{**a, "completion": " Mira is grey."} if "Mira" in str(a) else a for a in ANSWERS]
    write_jsonl(checkpoint / ANSWERS_FILE, plain)
    again = pytester.runpytest(*args)
    again.stdout.fnmatch_lines(["scored 4 samples*; 0 from cache"])
    again.assert_outcomes(passed=3, failed=1)


def test_a_fake_checkpoint_without_its_table_is_a_usage_error(
    pytester: pytest.Pytester, fake: Path
) -> None:
    shutil.copytree(fake, pytester.path / "ckpt")
    (pytester.path / "ckpt" / ANSWERS_FILE).unlink()
    write_jsonl(pytester.path / "data.jsonl", DATA[:1])
    result = pytester.runpytest("--ilp-checkpoint=ckpt", "--ilp-data=data.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: */ckpt is a fake checkpoint (model_type pytest-ilp-fake) without its "
            f"{ANSWERS_FILE}*"
        ]
    )
