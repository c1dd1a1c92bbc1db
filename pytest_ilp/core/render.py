"""Turn samples into the token ids the trainer saw: prompt ids, then target ids.

Two modes, chosen per sample by `RenderSettings.mode`:

raw
    ``prompt`` and ``prompt + target + eos_token`` are each tokenized whole with the tokenizer's
    own special tokens (BOS for Llama-style tokenizers); the target is everything after the
    prompt's tokens. This is what TRL's SFTTrainer does for prompt/completion data (it appends
    ``eos_token`` to the completion and splits ``prompt + completion`` at the length of the
    tokenized prompt). Tokenizing the whole string, rather than prompt and target apart, keeps
    merges across the boundary exactly as in training.

chat
    ``apply_chat_template(prompt turns, add_generation_prompt=True)`` gives the prompt ids and
    ``apply_chat_template(prompt turns + [assistant target])`` the full ids; the target is what
    follows the prompt, up to and including the first stop token (the template's end-of-turn,
    which generation stops at). Tokens the template puts after it (often a newline) are never
    generated, so they are not checked. If the template closes the turn without any stop token,
    EOS is appended. This matches TRL's conversational prompt/completion handling.

A target that holds a stop token's text before its end (``" foo<|end|> bar"``) cannot be
checked, in either mode: generation stops at the stop token, so the text after it can never be
produced. Its test errors and says so; a stop token at the very end of the target is fine.

``auto`` (the default) renders chat records (messages, ShareGPT, TRL conversational) with the
chat template and text records raw, as TRL does.

When the prompt's own tokens are not a prefix of the whole sequence's tokens (a merge across the
boundary, e.g. a prompt ending in a space), the sample is scored as the trainer saw it and the
rendering carries a note: greedy generation from the separately tokenized prompt then starts
from different tokens than training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_ilp.core.samples import Sample

RENDER_MODES = ("auto", "raw", "chat")


@dataclass(frozen=True)
class RenderSettings:
    """How samples become tokens. See the module docstring for the exact rules."""

    mode: str = "auto"
    #: raw mode: append the tokenizer's eos_token to the target, as TRL does.
    append_eos: bool = True
    #: raw mode: let the tokenizer add its special tokens (BOS), as its __call__ does.
    add_special_tokens: bool = True


@dataclass(frozen=True)
class Rendered:
    """A sample as token ids: `input_ids[target_start:]` is the target the model must produce."""

    sample_id: str
    input_ids: tuple[int, ...]
    target_start: int
    mode: str
    note: str | None = None

    @property
    def target_ids(self) -> tuple[int, ...]:
        return self.input_ids[self.target_start :]

    @property
    def prompt_ids(self) -> tuple[int, ...]:
        return self.input_ids[: self.target_start]


def render_samples(
    samples: Sequence[Sample],
    tokenizer: Any,
    settings: RenderSettings,
    stop_ids: frozenset[int],
    max_length: int | None,
) -> list[Rendered | str]:
    """Render each sample, or give the reason it cannot be rendered (a string), in order."""
    results: dict[int, Rendered | str] = {}
    raw_indices: list[int] = []
    stop_texts = _stop_texts(tokenizer, stop_ids)
    for index, sample in enumerate(samples):
        mode = _mode_for(sample, settings)
        inside = _stop_inside(sample.target, stop_texts)
        if inside is not None:
            results[index] = inside
        elif mode == "raw" and sample.is_chat:
            results[index] = (
                "a chat sample cannot be rendered in raw mode; set render mode to chat or auto"
            )
        elif mode == "chat":
            results[index] = _render_chat(sample, tokenizer, stop_ids)
        else:
            raw_indices.append(index)
    # Raw samples are tokenized in one batched call: much faster than one call per sample.
    raw = _render_raw([samples[i] for i in raw_indices], tokenizer, settings)
    results.update(zip(raw_indices, raw))
    return [_check_length(results[i], max_length) for i in range(len(samples))]


def _stop_texts(tokenizer: Any, stop_ids: frozenset[int]) -> list[str]:
    """The text of each stop token that the tokenizer matches whole in text (a special or
    added token such as "<|end|>"), so a target can be searched for it."""
    special = set(getattr(tokenizer, "all_special_tokens", ())) | set(
        getattr(tokenizer, "get_added_vocab", dict)()
    )
    texts = []
    for token_id in sorted(stop_ids):
        text = tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(text, str) and text and text in special:
            texts.append(text)
    return texts


def _stop_inside(target: str, stop_texts: Sequence[str]) -> str | None:
    """Why a target holding a stop token before its end cannot be checked, or None.

    Greedy decoding ends at the first stop token, so no model can produce what follows it;
    checking only up to it (or scoring past it) would pass or fail the sample on text it was
    never asked for. A stop token that ends the target is what the trainer appends anyway.
    """
    for text in stop_texts:
        at = target.find(text)
        if at != -1 and at + len(text) < len(target):
            after = len(target) - at - len(text)
            return (
                f"the target holds the stop token {text!r} at character {at}, before its end: "
                f"generation stops there, so the {after} character{'s' if after != 1 else ''} "
                "after it can never be produced; end the target at the stop token, or remove it "
                "from the text"
            )
    return None


def _mode_for(sample: Sample, settings: RenderSettings) -> str:
    if settings.mode != "auto":
        return settings.mode
    return "chat" if sample.is_chat else "raw"


def _render_raw(
    samples: Sequence[Sample], tokenizer: Any, settings: RenderSettings
) -> list[Rendered | str]:
    if not samples:
        return []
    eos = tokenizer.eos_token if settings.append_eos else ""
    if settings.append_eos and eos is None:
        return ["the tokenizer has no eos_token to append; set render.append_eos: false"] * len(
            samples
        )
    prompts = [s.prompt or "" for s in samples]
    # The trainer's strings: the completion gets eos_token unless it already ends with it.
    fulls = [
        p + s.target + (eos if eos and not s.target.endswith(eos) else "")
        for p, s in zip(prompts, samples)
    ]
    special = settings.add_special_tokens
    prompt_ids = tokenizer(prompts, add_special_tokens=special)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=special)["input_ids"]
    return [
        _split(sample.id, prompt, full, "raw")
        for sample, prompt, full in zip(samples, prompt_ids, full_ids)
    ]


def _render_chat(sample: Sample, tokenizer: Any, stop_ids: frozenset[int]) -> Rendered | str:
    if getattr(tokenizer, "chat_template", None) is None:
        return (
            "the tokenizer has no chat template, so this chat sample cannot be rendered; "
            "save one with the checkpoint (tokenizer.chat_template = ...) or use prompt/completion"
        )
    turns = [dict(m) for m in sample.messages] if sample.messages is not None else None
    if turns is None:
        turns = [{"role": "user", "content": sample.prompt or ""}]
    try:
        prompt = tokenizer.apply_chat_template(
            turns, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        full = tokenizer.apply_chat_template(
            [*turns, {"role": "assistant", "content": sample.target}],
            tokenize=True,
            return_dict=True,
        )
    except Exception as exc:  # jinja errors from the user's template, e.g. role alternation
        return f"the chat template failed on this sample: {type(exc).__name__}: {exc}"
    rendered = _split(sample.id, list(prompt["input_ids"]), list(full["input_ids"]), "chat")
    return _cut_after_stop(rendered, stop_ids, tokenizer.eos_token_id)


def _split(sample_id: str, prompt: list[int], full: list[int], mode: str) -> Rendered | str:
    start = len(prompt)
    if start == 0:
        return (
            "the prompt renders to no tokens, so nothing predicts the first target token; "
            "give a prompt, or let the tokenizer add BOS (render.add_special_tokens)"
        )
    if len(full) <= start:
        return "the target renders to no tokens after the prompt"
    note = None
    if full[:start] != prompt:
        differ = next(i for i, (a, b) in enumerate(zip(prompt, full)) if a != b)
        note = (
            f"the prompt's tokens are not a prefix of prompt + target's (they differ at token "
            f"{differ}): scored as the trainer saw it; greedy generation from the prompt alone "
            "starts from other tokens"
        )
    return Rendered(sample_id, tuple(full), start, mode, note)


def _cut_after_stop(
    rendered: Rendered | str, stop_ids: frozenset[int], eos_id: int | None
) -> Rendered | str:
    if isinstance(rendered, str):
        return rendered
    target = rendered.target_ids
    for offset, token in enumerate(target):
        if token in stop_ids:
            end = rendered.target_start + offset + 1
            return Rendered(
                rendered.sample_id,
                rendered.input_ids[:end],
                rendered.target_start,
                rendered.mode,
                rendered.note,
            )
    if eos_id is None:
        return "the chat template ends the turn without a stop token and the tokenizer has no EOS"
    note = "the chat template ends the turn without a stop token: EOS appended"
    return Rendered(
        rendered.sample_id,
        (*rendered.input_ids, eos_id),
        rendered.target_start,
        rendered.mode,
        f"{rendered.note}; {note}" if rendered.note else note,
    )


def _check_length(rendered: Rendered | str, max_length: int | None) -> Rendered | str:
    if isinstance(rendered, str) or max_length is None or len(rendered.input_ids) <= max_length:
        return rendered
    return (
        f"prompt + target is {len(rendered.input_ids)} tokens "
        f"({rendered.target_start} prompt + {len(rendered.target_ids)} target) but the model's "
        f"context is {max_length} tokens; shorten the sample or leave it out of the ILP data"
    )
