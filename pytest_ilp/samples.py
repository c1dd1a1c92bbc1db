"""Load SFT samples from data files and normalise every record format into one `Sample`.

Files: JSONL, JSON (a list of records, or one record), YAML (a list of records), and, when the
`datasets` package is installed, Parquet files and datasets saved with `save_to_disk`.

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
``criterion`` (how this sample is judged, see `pytest_ilp.criteria`) and ``distractors`` (wrong
responses to the same prompt, for the ``choice`` criterion).
A record without ``id`` gets a short hash of its prompt and target, so ids survive reordering.

A file that cannot be parsed raises `IlpDataError` naming the file and line. A record that parses
but cannot become a sample (no target, unknown format) still becomes a `Sample` whose `problem`
says why: its test then errors with that message instead of the record vanishing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pytest_ilp.criteria import Criterion, parse_criterion
from pytest_ilp.errors import IlpDataError

TEXT_SUFFIXES = (".jsonl", ".json", ".yaml", ".yml")
TABLE_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + TABLE_SUFFIXES

CHAT_FORMATS = ("messages", "sharegpt")
FORMATS = ("prompt_completion", "alpaca", *CHAT_FORMATS)

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


def is_data_path(path: Path) -> bool:
    """Whether pytest-ilp reads this path as a data file (or a saved dataset folder)."""
    if path.is_dir():
        return is_saved_dataset(path)
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()


def expand_data_paths(paths: Sequence[Path]) -> list[Path]:
    """Files stay as they are; a folder becomes its data files (recursively, sorted).

    A folder saved with `datasets.Dataset.save_to_disk` counts as one data path.
    Raises `IlpDataError` for a missing path or a folder with no data in it.
    """
    expanded: list[Path] = []
    for path in paths:
        if not path.exists():
            raise IlpDataError(f"{path}: no such file or folder (given as ILP data)")
        if path.is_file() or is_saved_dataset(path):
            if not is_data_path(path):
                raise IlpDataError(
                    f"{path}: unsupported data file type {path.suffix!r}; "
                    f"use one of {', '.join(SUPPORTED_SUFFIXES)} or a saved datasets folder"
                )
            expanded.append(path)
            continue
        found = sorted(
            p
            for p in path.rglob("*")
            if (p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES and not _inside_dataset(p))
            or (p.is_dir() and is_saved_dataset(p))
        )
        if not found:
            raise IlpDataError(
                f"{path}: the folder holds no data files ({', '.join(SUPPORTED_SUFFIXES)})"
            )
        expanded.extend(found)
    return list(dict.fromkeys(expanded))


def _inside_dataset(path: Path) -> bool:
    return any(is_saved_dataset(parent) for parent in path.parents)


def load_samples(
    path: Path,
    must_learn: MustLearnSelector | None = None,
    taken: dict[str, Sample] | None = None,
) -> list[Sample]:
    """Read every record of one data file as a `Sample`, in file order.

    `taken` holds the samples already loaded from other files: ids stay unique across them.
    """
    samples = [sample_from_record(record, path, line) for line, record in read_records(path)]
    if must_learn is not None:
        samples = [
            replace(s, must_learn=True) if not s.must_learn and must_learn.matches(s) else s
            for s in samples
        ]
    return unique_ids(samples, {} if taken is None else taken)


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield `(line or row, record)` for each record of a data file."""
    if path.is_dir() or path.suffix.lower() in TABLE_SUFFIXES:
        yield from _read_table(path)
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise IlpDataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise IlpDataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path, text)
    elif suffix == ".json":
        yield from _read_json(path, text)
    else:
        yield from _read_yaml(path, text)


def _read_jsonl(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is JSON text
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise IlpDataError(
                f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno}); "
                "each line of a .jsonl file must hold one JSON record: fix or remove the line"
            ) from None


def _read_json(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IlpDataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict):
        yield 1, data
        return
    if not isinstance(data, list):
        raise IlpDataError(f"{path}: expected a list of records (or one record) at the top level")
    # Decode element by element to learn the line on which each record starts.
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    for _ in data:
        while text[position] in " \t\r\n,":
            position += 1
        record, end = decoder.raw_decode(text, position)
        yield text.count("\n", 0, position) + 1, record
        position = end


def _read_yaml(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    try:  # the reader checks the characters as the loader is made
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise IlpDataError(f"{path}: not valid YAML ({exc})") from None
    try:
        root = loader.get_single_node()
        if root is None:
            return
        if isinstance(root, yaml.MappingNode):
            yield root.start_mark.line + 1, loader.construct_document(root)
            return
        if not isinstance(root, yaml.SequenceNode):
            raise IlpDataError(f"{path}: expected a list of records at the top level")
        for node in root.value:
            yield node.start_mark.line + 1, loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise IlpDataError(f"{where}: not valid YAML ({exc.problem or exc})") from None
    except yaml.YAMLError as exc:
        raise IlpDataError(f"{path}: not valid YAML ({exc})") from None
    finally:
        loader.dispose()


def _read_table(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        import datasets
    except ImportError:
        raise IlpDataError(
            f"{path}: reading Parquet files and saved datasets needs the `datasets` package: "
            "pip install datasets"
        ) from None
    try:
        loaded = (
            datasets.load_from_disk(str(path))
            if path.is_dir()
            else datasets.Dataset.from_parquet(str(path))
        )
    except Exception as exc:  # pyarrow's ArrowInvalid, FileNotFoundError, ... from datasets
        what = "a saved dataset" if path.is_dir() else "a Parquet file"
        raise IlpDataError(
            f"{path}: datasets could not read it as {what} ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        raise IlpDataError(
            f"{path}: a DatasetDict with splits {sorted(loaded)}; save the split you trained "
            "on alone (dataset['train'].save_to_disk(...)) and point --ilp-data at it"
        )
    yield from enumerate(loaded, start=1)


def sample_from_record(record: Any, source: Path, line: int) -> Sample:
    """Turn one parsed record into a `Sample` (with `problem` set when it cannot be checked)."""
    if not isinstance(record, Mapping):
        return _problem_sample(
            record, source, line, f"a record must be a mapping, got {type(record).__name__}"
        )
    try:
        parsed = _parse_format(record)
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
    try:
        extras = _parse_optional_fields(record)
    except ValueError as exc:
        extras, problem = {}, str(exc)
    explicit = _record_id(record)
    return replace(
        base,
        id=explicit or content_id(base),
        explicit_id=explicit is not None,
        problem=problem,
        **extras,
    )


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
        extra = record.get("input") or ""
        prompt = f"{instruction}\n\n{_text(extra, 'input')}" if extra else instruction
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
    if record.get("stage") is not None:
        extras["stage"] = str(record["stage"])
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
    value = record.get("id")
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value) or None


def content_id(sample: Sample) -> str:
    """A short, stable hash of what the sample asks (prompt and target)."""
    blob = json.dumps(sample.content_key(), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _problem_sample(record: Any, source: Path, line: int, problem: str) -> Sample:
    explicit = _record_id(record) if isinstance(record, Mapping) else None
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    sample_id = explicit or "invalid-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8]
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
