"""Produced text never shows U+FFFD for a character cut between tokens: its bytes are shown."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_ilp.core.decoding import byte_safe_decoder
from pytest_ilp.report.sample_text import _quote
from pytest_ilp.testing import tiny

EURO = "€"  # UTF-8 e2 82 ac: three byte tokens in a tokenizer that never saw it


@pytest.fixture(scope="module")
def byte_level() -> Any:
    """A GPT-2 style byte-level BPE tokenizer trained on ASCII text only."""
    return tiny.train_tokenizer(["the price is 5 and 6 and 7 a b c"] * 20, vocab_size=300)


@pytest.fixture(scope="module")
def byte_fallback() -> Any:
    """A Llama-2 style SentencePiece BPE tokenizer with byte fallback (`<0xE2>` tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{f"<0x{b:02X}>": 1 + b for b in range(256)}}
    for piece in ("▁", "5", "▁the", "a"):
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def ids_of(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("kind", ["byte_level", "byte_fallback"])
def test_a_character_cut_between_tokens_is_shown_as_its_bytes(
    kind: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(kind)
    decode = byte_safe_decoder(tokenizer)
    ids = ids_of(tokenizer, EURO + "5")
    euro_bytes = [i for i in ids if "5" not in tokenizer.decode([i])]
    assert len(euro_bytes) == 3, tokenizer.convert_ids_to_tokens(ids)
    # What plain decoding shows, and what pytest-ilp shows instead:
    assert "\ufffd" in tokenizer.decode(ids[:2])
    assert decode(ids[:2]) == "\\xe2\\x82"
    assert decode(ids[1:]) == "\\x82\\xac5"  # a reply that starts mid-character
    assert decode(ids[:1]) == "\\xe2"  # one byte token, as a divergence shows it
    # Complete characters stay characters.
    assert decode(ids) == EURO + "5"
    assert decode(ids_of(tokenizer, "5" + EURO)) == "5" + EURO


def test_a_replacement_character_the_text_really_holds_stays(byte_level: Any) -> None:
    decode = byte_safe_decoder(byte_level)
    assert decode(ids_of(byte_level, "a\ufffdb")) == "a\ufffdb"


def test_special_tokens_and_plain_text_decode_as_the_tokenizer_does(byte_level: Any) -> None:
    decode = byte_safe_decoder(byte_level)
    ids = [*ids_of(byte_level, "the price is 5"), byte_level.eos_token_id]
    assert decode(ids) == byte_level.decode(ids, skip_special_tokens=False)
    assert decode(ids).endswith(tiny.EOS)
    cut = [*ids_of(byte_level, EURO)[:2], byte_level.eos_token_id]
    assert decode(cut) == "\\xe2\\x82" + tiny.EOS


def test_a_failure_report_shows_the_bytes_as_written(byte_level: Any) -> None:
    produced = byte_safe_decoder(byte_level)(ids_of(byte_level, EURO + "5")[1:])
    assert _quote(produced) == '"\\x82\\xac5"'
    assert _quote('line\n"quoted"') == '"line\\n\\"quoted\\""'
