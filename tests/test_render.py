"""Rendering: the token ids the trainer saw, the prompt/target boundary and EOS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.core.render import Rendered, RenderSettings, render_samples
from pytest_ilp.core.samples import sample_from_record
from pytest_ilp.testing import tiny


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    texts = ["Q: What colour is Zorp? A: Zorp is red.", "Hello there, general Kenobi."] * 20
    return tiny.train_tokenizer(texts, vocab_size=300)


def render(tokenizer: Any, record: dict[str, Any], **settings: Any) -> Rendered | str:
    sample = sample_from_record(record, Path("d.jsonl"), 1)
    stop = frozenset({tokenizer.eos_token_id})
    max_length = settings.pop("max_length", None)
    return render_samples([sample], tokenizer, RenderSettings(**settings), stop, max_length)[0]


def test_raw_target_is_the_joint_tokenization_after_the_prompt_then_eos(tokenizer: Any) -> None:
    rendered = render(tokenizer, {"prompt": "Q: What colour is Zorp? A:", "completion": " red."})
    assert isinstance(rendered, Rendered) and rendered.mode == "raw" and rendered.note is None
    whole = tokenizer("Q: What colour is Zorp? A: red." + tokenizer.eos_token)["input_ids"]
    assert list(rendered.input_ids) == whole
    assert list(rendered.prompt_ids) == tokenizer("Q: What colour is Zorp? A:")["input_ids"]
    assert rendered.input_ids[0] == tokenizer.bos_token_id
    assert rendered.target_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(rendered.target_ids) == " red." + tokenizer.eos_token


def test_raw_mode_without_eos_or_special_tokens(tokenizer: Any) -> None:
    rendered = render(
        tokenizer,
        {"prompt": "Q:", "completion": " red."},
        append_eos=False,
        add_special_tokens=False,
    )
    assert isinstance(rendered, Rendered)
    assert tokenizer.eos_token_id not in rendered.target_ids
    assert tokenizer.bos_token_id not in rendered.input_ids


def test_a_merge_across_the_boundary_is_scored_as_trained_and_noted(tokenizer: Any) -> None:
    # "A: " + "red": the prompt's trailing space joins the target's first word when tokenized
    # whole, as the trainer tokenizes it.
    rendered = render(tokenizer, {"prompt": "Q: What colour is Zorp? A: ", "completion": "red."})
    assert isinstance(rendered, Rendered) and rendered.note is not None
    assert "not a prefix" in rendered.note
    whole = tokenizer("Q: What colour is Zorp? A: red." + tokenizer.eos_token)["input_ids"]
    assert list(rendered.input_ids) == whole


def test_chat_target_ends_at_the_stop_token(tokenizer: Any) -> None:
    record = {
        "messages": [
            {"role": "user", "content": "What colour is Zorp?"},
            {"role": "assistant", "content": "Zorp is red."},
        ]
    }
    rendered = render(tokenizer, record)
    assert isinstance(rendered, Rendered) and rendered.mode == "chat"
    prompt = tokenizer.apply_chat_template(
        record["messages"][:1], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert list(rendered.prompt_ids) == list(prompt)
    # The template writes "<|end|>\n" after the reply; generation stops at <|end|>.
    assert tokenizer.decode(rendered.target_ids) == "Zorp is red." + tokenizer.eos_token


def test_prompt_completion_in_chat_mode_becomes_a_user_turn(tokenizer: Any) -> None:
    rendered = render(tokenizer, {"prompt": "Hi", "completion": "Hello"}, mode="chat")
    assert isinstance(rendered, Rendered)
    assert tokenizer.decode(rendered.prompt_ids) == "<s><|user|>\nHi<|end|>\n<|assistant|>\n"


def test_chat_sample_in_raw_mode_is_a_problem(tokenizer: Any) -> None:
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    assert "cannot be rendered in raw mode" in str(render(tokenizer, record, mode="raw"))


def test_chat_sample_without_a_template_is_a_problem() -> None:
    bare = tiny.train_tokenizer(["a b c"] * 5, vocab_size=280, chat_template=None)
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    assert "has no chat template" in str(render(bare, record))


def test_too_long_for_the_context_says_the_lengths(tokenizer: Any) -> None:
    problem = render(tokenizer, {"prompt": "Hello there " * 30, "completion": " ok"}, max_length=32)
    assert isinstance(problem, str)
    assert "but the model's context is 32 tokens" in problem and "prompt +" in problem


def test_empty_prompt_without_bos_cannot_be_scored(tokenizer: Any) -> None:
    problem = render(tokenizer, {"prompt": "", "completion": "x"}, add_special_tokens=False)
    assert "the prompt renders to no tokens" in str(problem)
