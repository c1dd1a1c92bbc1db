"""The `Sample`, and every record format normalised into one (`sample_from_record`).

The data files are found by `datapaths` and read into records by `datafiles`.

Record formats, detected per record:

==================  ==========================================  =============================
format              fields                                      prompt / target
==================  ==========================================  =============================
prompt_completion   ``prompt`` + ``completion`` (or             the two strings; TRL's
                    ``response``)                               conversational variant (lists
                                                                of messages) is chat
alpaca              ``instruction`` [+ ``input``] + ``output``  ``instruction``, a blank line,
                                                                ``input``; ``output``
messages            ``messages``: [{role, content}, ...]        everything before the last
                                                                assistant turn; that turn
sharegpt            ``conversations``: [{from, value}, ...]     as ``messages``
==================  ==========================================  =============================

Optional fields on every record: ``id``, ``stage``, ``tags``, ``must_learn``, ``meta``,
``criterion`` (how this sample is judged, see `pytest_ilp.core.criteria`) and ``distractors`` (wrong
responses to the same prompt, for the ``choice`` criterion).
A record without ``id`` gets a short hash of its prompt and target, so ids survive reordering.

A record that parses but cannot become a sample (no target, unknown format, a field of the
wrong type, text that is not valid Unicode) still becomes a `Sample` whose `problem` says why:
its test then errors with that message instead of the record vanishing.

Fields are never converted silently: ``id`` is a string or an integer, ``stage`` a string (or an
integer), ``input`` a string. In YAML the ``id``, ``stage`` and ``tags`` scalars are read as the
text written, so ``id: 010`` is ``"010"``, not 8, and ``id: no`` is ``"no"``, not false.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_ilp.core.criteria import Criterion, parse_criterion
from pytest_ilp.core.errors import IlpDataError

#: data files read as tables (one record per row): their `Sample.line` is a row.
TABLE_SUFFIXES = (".parquet",)

# ShareGPT speaker names mapped onto chat-template roles.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "function_call": "assistant",
    "tool": "tool",
    "observation": "tool",
}

Message = Mapping[str, Any]


@dataclass(frozen=True)
class Sample:
    """One SFT sample: a prompt (text, or chat turns) and the target the model should produce.

    `prompt` is set for the text formats and `messages` (the turns before the target) for the
    chat formats; `render` decides how either becomes tokens. `line` is the 1-based line of the
    record in a text file, or its 1-based row in a table.
    """

    id: str
    source: Path
    line: int
    format: str
    target: str
    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    stage: str | None = None
    tags: tuple[str, ...] = ()
    must_learn: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    problem: str | None = None
    #: the id came from the record's `id` field (not from a content hash).
    explicit_id: bool = False
    #: wrong responses to the same prompt (the `choice` criterion's other options).
    distractors: tuple[str, ...] = ()
    #: the record's own `criterion` field, if any.
    criterion: Criterion | None = None

    @property
    def location(self) -> str:
        unit = "row " if self.source.suffix in TABLE_SUFFIXES or self.source.is_dir() else ""
        return f"{self.source}:{unit}{self.line}"

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def content_key(self) -> dict[str, Any]:
        """What the sample asks of the model, as plain JSON data (for hashing and caching)."""
        return {
            "prompt": self.prompt,
            "messages": [dict(m) for m in self.messages] if self.messages is not None else None,
            "target": self.target,
        }


@dataclass(frozen=True)
class MustLearnSelector:
    """Marks samples as must-learn by tag or id (the `must_learn:` section of ilp.yaml)."""

    tags: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()

    def matches(self, sample: Sample) -> bool:
        return sample.id in self.ids or not self.tags.isdisjoint(sample.tags)


def sample_from_record(record: Any, source: Path, line: int) -> Sample:
    """Turn one parsed record into a `Sample` (with `problem` set when it cannot be checked)."""
    if not isinstance(record, Mapping):
        return _problem_sample(
            record, source, line, f"a record must be a mapping, got {type(record).__name__}"
        )
    problem = _text_problem(record)
    if problem is not None:
        return _problem_sample(record, source, line, problem)
    try:
        parsed = _parse_format(record)
        extras = _parse_optional_fields(record)
        explicit = _record_id(record)
    except ValueError as exc:
        return _problem_sample(record, source, line, str(exc))
    fmt, prompt, messages, target = parsed
    base = Sample(
        id="",
        source=source,
        line=line,
        format=fmt,
        target=target,
        prompt=prompt,
        messages=messages,
    )
    problem = (
        None if target.strip() else "the target is empty: give the text the model should produce"
    )
    return replace(
        base,
        id=explicit or content_id(base),
        explicit_id=explicit is not None,
        problem=problem,
        **extras,
    )


def _text_problem(record: Mapping[str, Any]) -> str | None:
    """A key that is not a string, or a string that is not valid Unicode (a lone surrogate
    from a JSON escape such as "\\ud800"), anywhere in the record; None if all is well."""
    pending: list[tuple[str, Any]] = [("", record)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return (
                    f"`{where}` holds a lone surrogate {value[exc.start]!r} at character "
                    f"{exc.start} (a \\ud800-\\udfff JSON escape without its pair), which is "
                    "not text; fix the escape or remove it"
                )
        elif isinstance(value, Mapping):
            for key, child in value.items():
                if not isinstance(key, str):
                    return f"`{where or 'record'}` has a key {key!r} that is not a string"
                pending.append((f"{where}.{key}" if where else key, child))
                pending.append((f"{where or 'record'} key", key))
        elif isinstance(value, (list, tuple)):
            pending.extend((f"{where}[{i}]", child) for i, child in enumerate(value))
    return None


def _parse_format(
    record: Mapping[str, Any],
) -> tuple[str, str | None, tuple[Message, ...] | None, str]:
    if "messages" in record:
        messages = _check_messages(record["messages"], "messages")
        return ("messages", None, *_split_conversation(messages))
    if "conversations" in record:
        turns = record["conversations"]
        if not isinstance(turns, list) or not all(isinstance(t, Mapping) for t in turns):
            raise ValueError("`conversations` must be a list of {from, value} turns")
        messages = []
        for turn in turns:
            speaker = str(turn.get("from", ""))
            if speaker not in SHAREGPT_ROLES:
                raise ValueError(
                    f"unknown ShareGPT speaker {speaker!r}; known: {', '.join(SHAREGPT_ROLES)}"
                )
            messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value")})
        return ("sharegpt", None, *_split_conversation(_check_messages(messages, "conversations")))
    if "prompt" in record:
        completion_key = "completion" if "completion" in record else "response"
        if completion_key not in record:
            raise ValueError("the record has a `prompt` but no `completion` (or `response`) field")
        prompt, completion = record["prompt"], record[completion_key]
        if isinstance(prompt, list) and isinstance(completion, list):
            # TRL's conversational prompt-completion: both are lists of messages.
            messages = _check_messages(prompt + completion, "prompt + completion")
            return ("messages", None, *_split_conversation(messages))
        return "prompt_completion", _text(prompt, "prompt"), None, _text(completion, completion_key)
    if "instruction" in record:
        if "output" not in record:
            raise ValueError("the record has an `instruction` but no `output` field")
        instruction = _text(record["instruction"], "instruction")
        extra = record.get("input")
        extra = "" if extra is None else _text(extra, "input")
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        return "alpaca", prompt, None, _text(record["output"], "output")
    raise ValueError(
        f"no known record format in fields {sorted(record)}; expected prompt/completion, "
        "prompt/response, instruction/input/output, messages or conversations"
    )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"`{name}` must be a string, got {type(value).__name__}")
    return value


def _check_messages(messages: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"`{name}` must be a non-empty list of messages")
    checked = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ValueError(f"message {number} of `{name}` has no `role`")
        role = message["role"]
        if not isinstance(role, str) or not role.strip():
            raise ValueError(
                f"message {number} of `{name}` has no valid `role` (got {role!r}): "
                "give a role such as system, user or assistant"
            )
        if not isinstance(message.get("content"), str):
            raise ValueError(f"message {number} of `{name}` has no text `content`")
        checked.append(dict(message))
    return checked


def _split_conversation(messages: list[dict[str, Any]]) -> tuple[tuple[Message, ...], str]:
    """The prompt is every turn before the last assistant turn; the target is that turn."""
    if messages[-1]["role"] != "assistant":
        raise ValueError(
            f"the conversation ends with a {messages[-1]['role']!r} turn, not an assistant turn: "
            "the last turn must be the assistant reply the model should learn"
        )
    if len(messages) == 1:
        raise ValueError("the conversation has only the assistant turn: there is no prompt")
    return tuple(messages[:-1]), messages[-1]["content"]


def _parse_optional_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    stage = record.get("stage")
    if stage is not None:
        if isinstance(stage, bool) or not isinstance(stage, (str, int)) or not str(stage).strip():
            raise ValueError(
                f"`stage` must be a stage name (a string), got {_shown(stage)}; "
                "name the training stage the record was trained in, as ilp.yaml's history does"
            )
        extras["stage"] = str(stage)
    tags = record.get("tags")
    if tags is not None:
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError("`tags` must be a list of strings")
        extras["tags"] = tuple(tags)
    must_learn = record.get("must_learn")
    if must_learn is not None:
        if not isinstance(must_learn, bool):
            raise ValueError(f"`must_learn` must be true or false, got {must_learn!r}")
        extras["must_learn"] = must_learn
    meta = record.get("meta")
    if meta is not None:
        if not isinstance(meta, Mapping):
            raise ValueError("`meta` must be a mapping")
        extras["meta"] = dict(meta)
    distractors = record.get("distractors")
    if distractors is not None:
        if (
            not isinstance(distractors, list)
            or not distractors
            or not all(isinstance(d, str) and d.strip() for d in distractors)
        ):
            raise ValueError(
                "`distractors` must be a non-empty list of non-empty strings (wrong responses "
                "to the same prompt)"
            )
        extras["distractors"] = tuple(distractors)
    if record.get("criterion") is not None:
        try:
            extras["criterion"] = parse_criterion(record["criterion"])
        except ValueError as exc:
            raise ValueError(f"`criterion`: {exc}") from None
    return extras


def _record_id(record: Mapping[str, Any]) -> str | None:
    """The record's own id as text; None when it has none. Raises `ValueError` for an id of
    another type or an empty one."""
    value = record.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(
            f"`id` must be a string or an integer, got {_shown(value)}; "
            "leave it out to get an id hashed from the content"
        )
    if isinstance(value, int) and len(str(abs(value))) > 100:
        raise ValueError(f"`id` is an integer of {len(str(abs(value)))} digits; use a short id")
    text = str(value)
    if not text.strip():
        raise ValueError("`id` is empty; give a name or leave the field out")
    control = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        # The id names a test on the command line, in the terminal and in JUnit XML.
        raise ValueError(f"`id` {text!r} holds the control character {control!r}; rename it")
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:39] + '…'}"


def content_id(sample: Sample) -> str:
    """A short, stable hash of what the sample asks (prompt and target)."""
    blob = json.dumps(sample.content_key(), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _problem_sample(record: Any, source: Path, line: int, problem: str) -> Sample:
    try:
        explicit = _record_id(record) if isinstance(record, Mapping) else None
        if explicit is not None:
            explicit.encode("utf-8")
    except (ValueError, UnicodeEncodeError):  # the id itself is the problem, or not text
        explicit = None
    # ASCII escapes: the record may hold lone surrogates, which UTF-8 cannot encode.
    blob = json.dumps(record, ensure_ascii=True, default=repr)
    sample_id = explicit or "invalid-" + hashlib.sha256(blob.encode("ascii")).hexdigest()[:8]
    return Sample(
        id=sample_id,
        source=source,
        line=line,
        format="unknown",
        target="",
        problem=problem,
        explicit_id=explicit is not None,
    )


def unique_ids(samples: list[Sample], taken: dict[str, Sample]) -> list[Sample]:
    """Give every sample an id not in `taken` (which is updated).

    Explicit ids must be unique: a repeat raises `IlpDataError` naming both places. Identical
    records without ids hash alike by design; the repeats get `-2`, `-3`... suffixes.
    """
    unique = []
    for sample in samples:
        earlier = taken.get(sample.id)
        if earlier is not None:
            if sample.explicit_id and not earlier.explicit_id:
                raise IlpDataError(
                    f"{sample.location}: sample id {sample.id!r} is also the id hashed from the "
                    f"content of the record at {earlier.location}, which has no `id`; choose "
                    "another id, or give that record one"
                )
            if sample.explicit_id:
                raise IlpDataError(
                    f"{sample.location}: duplicate sample id {sample.id!r} (also at "
                    f"{earlier.location}); give each record its own `id`"
                )
            n = 2
            while f"{sample.id}-{n}" in taken:
                n += 1
            sample = replace(sample, id=f"{sample.id}-{n}")
        taken[sample.id] = sample
        unique.append(sample)
    return unique
