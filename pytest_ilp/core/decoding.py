"""Token ids to the text a person reads, without U+FFFD where a token ends mid-character.

Byte-level tokenizers (GPT-2, Llama 3, Qwen, SmolLM) and SentencePiece tokenizers with byte
fallback (Llama 2, Mistral) split a character they have no token for into its UTF-8 bytes. A
single such token, or a reply cut off (or gone astray) between the bytes of one character, then
decodes to U+FFFD, "�", which hides what the model produced. Here the bytes of such a sequence
are decoded whole: complete characters come out as characters, and an incomplete one as its
bytes, `\\xe2\\x82`. A U+FFFD that the model really produced (the bytes EF BF BD) stays.

Imports nothing heavy: the tokenizer is a transformers tokenizer passed in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

REPLACEMENT = "\ufffd"
#: SentencePiece's byte-fallback tokens.
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
#: SentencePiece's word-boundary marker, a space once decoded.
_SPIECE_SPACE = "\u2581"

Decode = Callable[[Sequence[int]], str]


def byte_safe_decoder(tokenizer: Any) -> Decode:
    """`tokenizer.decode` (special tokens kept), except that a decoded U+FFFD that stands for
    bytes of an incomplete character is written as those bytes (`\\xe2\\x82`)."""
    token_bytes = _token_bytes(tokenizer)

    def decode(ids: Sequence[int]) -> str:
        text: str = tokenizer.decode(list(ids), skip_special_tokens=False)
        if REPLACEMENT not in text or token_bytes is None:
            return text
        pieces = [token_bytes(i) for i in ids]
        if any(p is None for p in pieces):
            return text
        raw = b"".join(p for p in pieces if p is not None)
        safe = raw.decode("utf-8", errors="backslashreplace")
        # SentencePiece decoders drop the space that marks the start of the first word.
        if safe.startswith(" ") and not text.startswith(" "):
            safe = safe[1:]
        return safe

    return decode


def _token_bytes(tokenizer: Any) -> Callable[[int], bytes | None] | None:
    """id -> the bytes the token stands for, for the tokenizer kinds that split characters
    into bytes; None for others (their decode is kept as it is)."""
    kinds = _decoder_kinds(tokenizer)
    if not kinds & {"ByteLevel", "ByteFallback"}:
        return None
    added = {
        int(i): str(getattr(token, "content", token)).encode("utf-8")
        for i, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()
    }
    byte_level = "ByteLevel" in kinds
    byte_of = {char: byte for byte, char in _bytes_to_unicode().items()}

    def token_bytes(token_id: int) -> bytes | None:
        if token_id in added:
            return added[token_id]
        token = tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(token, str):
            return None
        if byte_level:
            if not all(c in byte_of for c in token):
                return None
            return bytes(byte_of[c] for c in token)
        match = _BYTE_TOKEN.fullmatch(token)
        if match is not None:
            return bytes([int(match.group(1), 16)])
        return token.replace(_SPIECE_SPACE, " ").encode("utf-8")

    return token_bytes


def _decoder_kinds(tokenizer: Any) -> set[str]:
    """The types of a fast tokenizer's decoder and of the decoders it chains."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    try:
        decoder = json.loads(backend.to_str()).get("decoder")
    except (AttributeError, TypeError, ValueError):
        return set()
    kinds: set[str] = set()
    stack = [decoder]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                kinds.add(node["type"])
            stack.extend(node.get("decoders") or [])
    return kinds


@cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte to the printable character that stands for it in a
    byte-level BPE vocabulary (printable Latin-1 bytes stand for themselves)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table
