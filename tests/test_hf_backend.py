"""The hf backend's shortcuts change no verdict: a shared prompt prefix computed once, and the
output layer run at target positions only, give what full passes and greedy generation give."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from pytest_ilp.core.backends import BackendOptions, ScoreRequest, hf, hf_prefix
from pytest_ilp.core.backends.hf import HFBackend
from pytest_ilp.core.backends.hf_prefix import shared_prefix_groups
from pytest_ilp.core.checkpoint import inspect_checkpoint

from world import World

SYSTEM = (
    "You keep the registry of names and colours. Answer with the name, its colour and the "
    "words of the witness, exactly as written in the registry, and nothing else."
)


def request(prefix: list[int], rest: list[int], target: int) -> ScoreRequest:
    ids = (*prefix, *rest)
    return ScoreRequest(ids, len(ids) - target)


def test_requests_sharing_a_long_prefix_are_grouped_and_the_rest_are_not() -> None:
    shared = list(range(100, 150))  # 50 tokens
    requests = [request(shared, [i, i + 1, 7, 8], 2) for i in range(5)]
    requests.append(request(list(range(300, 350)), [1, 2, 3], 2))  # shares nothing
    requests.append(request(shared[:10], [9, 9, 9], 2))  # shares only 10 tokens
    groups, alone = shared_prefix_groups(requests)
    assert [(length, sorted(members)) for length, members in groups] == [(50, [0, 1, 2, 3, 4])]
    assert sorted(alone) == [5, 6]


def test_a_group_prefix_stops_before_the_first_target_token_is_predicted() -> None:
    shared = list(range(100, 160))
    # One member's target starts right after 40 shared tokens: position 39 predicts it.
    requests = [request(shared, [i], 1) for i in range(4)]
    requests.append(ScoreRequest((*shared[:40], 5, 6), 40))
    groups, _ = shared_prefix_groups(requests)
    assert [(length, sorted(members)) for length, members in groups] == [(39, [0, 1, 2, 3, 4])]


def chat_requests(world: World, tokenizer: Any, system: bool) -> list[ScoreRequest]:
    requests = []
    for record in world.chat_records[50:98]:  # the first 50 are held out of training
        turns = [{"role": "system", "content": SYSTEM}] if system else []
        turns += record["messages"]
        prompt = tokenizer.apply_chat_template(
            turns[:-1], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        full = tokenizer.apply_chat_template(turns, return_dict=True)["input_ids"]
        # The target: the reply up to and including the end-of-turn (EOS) token.
        end = full.index(tokenizer.eos_token_id, len(prompt)) + 1
        requests.append(ScoreRequest(tuple(full[:end]), len(prompt)))
    return requests


@pytest.mark.parametrize("prefix", ["system prompt", "trained prompts"])
def test_shared_prefix_scores_equal_full_passes_and_greedy_generation(
    prefix: str, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(world.checkpoint)
    # A long system prompt the model never saw (nothing learned), or the prompts it was trained
    # on, which share only "<s><|user|>\nWhat colour is" (some learned, some not).
    requests = chat_requests(world, tokenizer, system=prefix == "system prompt")
    if prefix == "trained prompts":
        monkeypatch.setattr(hf_prefix, "MIN_SHARED_PREFIX", 4)
    groups, _ = shared_prefix_groups(requests)
    assert groups and sum(len(m) for _, m in groups) == len(requests)

    backend = HFBackend(inspect_checkpoint(world.checkpoint), BackendOptions(device="cpu"))
    shared = backend.score(requests)
    monkeypatch.setattr(hf_prefix, "MIN_SHARING", len(requests) + 1)
    assert shared_prefix_groups(requests)[0] == []
    full = backend.score(requests)
    for a, b in zip(shared, full):
        assert a.top1_ids == b.top1_ids
        assert a.top2_ids == b.top2_ids
        assert a.target_logprobs == pytest.approx(b.target_logprobs, abs=1e-4)

    eos = tokenizer.eos_token_id
    learned = 0
    for r, scores in zip(requests, shared):
        target = list(r.input_ids[r.target_start :])
        with torch.inference_mode():
            output = backend.model.generate(
                input_ids=torch.tensor([r.input_ids[: r.target_start]]),
                max_new_tokens=len(target),
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )
        produced = output[0, r.target_start :].tolist()
        predicted = list(scores.top1_ids)
        # Greedy generation follows the target exactly as far as the argmax does, and then
        # produces the argmax at the first position where they part.
        agree = next((t for t in range(len(target)) if predicted[t] != target[t]), None)
        if agree is None:
            assert produced == target
            learned += 1
        else:
            assert produced[: agree + 1] == [*target[:agree], predicted[agree]]
    if prefix == "trained prompts":
        assert 0 < learned < len(requests)


@pytest.mark.parametrize("shared", [True, False])
def test_continuations_resume_from_the_pass_and_equal_greedy_generation(
    shared: bool, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A continuation from a divergence runs only its new tokens (the pass's keys and values
    of the prompt and the target before the divergence are reused), and produces what greedy
    `generate` from the same tokens produces."""
    from pytest_ilp.core.backends import GenerateRequest

    tokenizer = AutoTokenizer.from_pretrained(world.checkpoint)
    requests = chat_requests(world, tokenizer, system=shared)
    if not shared:
        monkeypatch.setattr(hf_prefix, "MIN_SHARING", len(requests) + 1)
    backend = HFBackend(inspect_checkpoint(world.checkpoint), BackendOptions(device="cpu"))
    stops = frozenset({tokenizer.eos_token_id})
    continuations = []
    for r, scores in zip(requests, backend.score(requests)):
        target = r.input_ids[r.target_start :]
        at = next((t for t in range(len(target)) if scores.top1_ids[t] != target[t]), None)
        if at is not None:
            ids = (*r.input_ids[: r.target_start + at], scores.top1_ids[at])
            continuations.append(GenerateRequest(ids, 3 + len(continuations) % 9, stops))
    assert len(continuations) >= 4

    forward = type(backend.model).forward
    widths: list[int] = []

    def counting_forward(model: Any, *args: Any, **kwargs: Any) -> Any:
        widths.append((kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[1])
        return forward(model, *args, **kwargs)

    monkeypatch.setattr(type(backend.model), "forward", counting_forward)
    produced = backend.generate(continuations)
    assert widths and max(widths) == 1  # no prefill: one new token per row and step
    monkeypatch.undo()
    for request, tokens in zip(continuations, produced):
        with torch.inference_mode():
            output = backend.model.generate(
                input_ids=torch.tensor([request.input_ids]),
                max_new_tokens=request.max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        expected = output[0, len(request.input_ids) :].tolist()
        if tokenizer.eos_token_id in expected:
            expected = expected[: expected.index(tokenizer.eos_token_id) + 1]
        assert list(tokens) == expected


def test_out_of_memory_halves_the_batch_and_gives_the_same_results(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device running out of memory (which a tiny model on a CPU cannot do, so it is
    injected): batches halve until they fit, and the figures do not change."""
    from pytest_ilp.core.backends import GenerateRequest

    tokenizer = AutoTokenizer.from_pretrained(world.checkpoint)
    requests = chat_requests(world, tokenizer, system=True)
    generate = [
        GenerateRequest(r.input_ids[: r.target_start], 6, frozenset({tokenizer.eos_token_id}))
        for r in requests
    ]
    backend = HFBackend(inspect_checkpoint(world.checkpoint), BackendOptions(device="cpu"))
    scores, produced = backend.score(requests), backend.generate(generate)

    forward = type(backend.model).forward
    seen: list[int] = []

    def tight_forward(model: Any, *args: Any, **kwargs: Any) -> Any:
        rows = (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[0]
        seen.append(rows)
        if rows > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(model, *args, **kwargs)

    monkeypatch.setattr(type(backend.model), "forward", tight_forward)
    again = backend.score(requests)
    assert [s.top1_ids for s in again] == [s.top1_ids for s in scores]
    for a, b in zip(again, scores):
        assert a.target_logprobs == pytest.approx(b.target_logprobs, abs=1e-4)
    assert backend.generate(generate) == produced
    assert max(seen) > 2 and seen[-1] <= 2  # it did run out, then fitted


@pytest.mark.parametrize("budget", [None, 96])
def test_every_forward_pass_stays_within_the_token_budget(
    budget: int | None, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset, the budget is the CPU default; either way it bounds the padded tokens of each
    batch (behind a shared prefix, only the rows' own tokens count), and a row longer than the
    budget still runs, alone."""
    tokenizer = AutoTokenizer.from_pretrained(world.checkpoint)
    requests = chat_requests(world, tokenizer, system=True) + chat_requests(
        world, tokenizer, system=False
    )
    options = BackendOptions(device="cpu", batch_tokens=budget)
    backend = HFBackend(inspect_checkpoint(world.checkpoint), options)
    limit = hf.CPU_BATCH_TOKENS if budget is None else budget
    assert backend.batch_tokens == limit

    forward = type(backend.model).forward
    batches: list[tuple[int, int]] = []

    def recording_forward(model: Any, *args: Any, **kwargs: Any) -> Any:
        if "logits_to_keep" not in kwargs:  # not the pass over a shared prefix
            ids = kwargs.get("input_ids") if "input_ids" in kwargs else args[0]
            batches.append(tuple(ids.shape))
        return forward(model, *args, **kwargs)

    monkeypatch.setattr(type(backend.model), "forward", recording_forward)
    scores = backend.score(requests)
    assert len(scores) == len(requests)
    assert sum(rows for rows, _ in batches) == len(requests)
    assert all(rows * width <= limit or rows == 1 for rows, width in batches)
    if budget is not None:
        assert len(batches) > 2


def test_target_figures_equal_a_full_log_softmax_across_slices() -> None:
    from pytest_ilp.core.backends.logits import ROWS, target_figures

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * ROWS + 5, 3000, generator=generator) * 4  # three slices
    next_tokens = torch.randint(0, 3000, (logits.shape[0],), generator=generator)
    target, top, ids = target_figures(logits, next_tokens)
    full = torch.log_softmax(logits, dim=-1)
    best, best_ids = full.topk(2, dim=-1)
    assert ids == best_ids.tolist()
    assert target == pytest.approx(full.gather(-1, next_tokens[:, None])[:, 0].tolist(), abs=1e-5)
    assert [v for pair in top for v in pair] == pytest.approx(best.flatten().tolist(), abs=1e-5)
    assert target_figures(logits[:0], next_tokens[:0]) == ([], [], [])
