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
``criterion`` (how this sample is judged, see `pytest_ilp.core.criteria`) and ``distractors`` (wrong
responses to the same prompt, for the ``choice`` criterion).
A record without ``id`` gets a short hash of its prompt and target, so ids survive reordering.

A file that cannot be parsed (bad syntax, a record nested deeper than `MAX_DEPTH`, an integer
longer than Python reads, no records at all) raises `IlpDataError` naming the file and line. A
record that parses but cannot become a sample (no target, unknown format, a field of the wrong
type, text that is not valid Unicode) still becomes a `Sample` whose `problem` says why: its test
then errors with that message instead of the record vanishing.

Fields are never converted silently: ``id`` is a string or an integer, ``stage`` a string (or an
integer), ``input`` a string. In YAML the ``id``, ``stage`` and ``tags`` scalars are read as the
text written, so ``id: 010`` is ``"010"``, not 8, and ``id: no`` is ``"no"``, not false.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pytest_ilp.core.criteria import Criterion, parse_criterion
from pytest_ilp.core.errors import IlpDataError

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

#: records nested deeper than this are refused: parsing, hashing and writing reports all recurse.
MAX_DEPTH = 64
#: values in one record (YAML aliases can make a small file expand without bound).
MAX_VALUES = 200_000
#: the longest integer Python converts from text by default (sys.get_int_max_str_digits()).
MAX_INT_DIGITS = 4300
#: YAML fields read as the text written, never as numbers, booleans or sexagesimals.
TEXT_FIELDS = ("id", "stage", "tags")
_YAML_STR = "tag:yaml.org,2002:str"
_YAML_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")


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
    try:
        return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
    except OSError:  # an unreadable folder: the walk that found it says so
        return False


def expand_data_paths(paths: Sequence[Path]) -> list[Path]:
    """Files stay as they are; a folder becomes its data files (recursively, sorted).

    A folder saved with `datasets.Dataset.save_to_disk` counts as one data path. Symbolic links
    are followed, but a file or folder reached twice (a link to one already read, a link loop
    such as ``self -> .``, a link to a folder above) is read once. Raises `IlpDataError` for a
    missing path, a folder with no data in it, and anything named like data that cannot be
    read: an unreadable folder, a dangling link, a link loop, a FIFO or device.
    """
    expanded: list[Path] = []
    for path in paths:
        kind = _kind(path)
        if kind is None:
            raise IlpDataError(f"{path}: no such file or folder (given as ILP data)")
        if kind == "folder" and not is_saved_dataset(path):
            found = _data_in_folder(path)
            if not found:
                raise IlpDataError(
                    f"{path}: the folder holds no data files ({', '.join(SUPPORTED_SUFFIXES)})"
                )
            expanded.extend(found)
            continue
        if kind not in ("file", "folder"):
            raise IlpDataError(f"{path}: {kind}; give a data file or a folder of them")
        if not is_data_path(path):
            raise IlpDataError(
                f"{path}: unsupported data file type {path.suffix!r}; "
                f"use one of {', '.join(SUPPORTED_SUFFIXES)} or a saved datasets folder"
            )
        expanded.append(path)
    # One file reached by two paths (a link and its target) is one data file.
    unique: dict[Path, Path] = {}
    for path in expanded:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _kind(path: Path) -> str | None:
    """ "file", "folder", None when nothing is there, or what else it is, in words."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (the link points back at itself)"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    other = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
    )
    return f"{other}, not a regular file"


def is_link_loop(path: Path) -> bool:
    """Whether `path` is a symbolic link to a folder that contains it (`self -> .`, `up -> ..`)."""
    if not path.is_symlink():
        return False
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # a dangling link or a loop of links
        return False
    parent = path.parent.resolve()
    return real == parent or real in parent.parents


def _data_in_folder(folder: Path) -> list[Path]:
    """The data files and saved datasets under `folder`, sorted, each real folder walked once."""
    found: list[Path] = []
    walked = {folder.resolve()}
    above = set(folder.resolve().parents)
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            raise IlpDataError(
                f"{current}: cannot read this folder of ILP data ({exc.strerror or exc}); "
                "make it readable or move it out of the data folder"
            ) from None
        for entry in entries:
            path = Path(entry.path)
            named_like_data = path.suffix.lower() in SUPPORTED_SUFFIXES
            kind = _kind(path)
            if kind == "folder":
                real = path.resolve()
                if real in walked or real in above:
                    continue  # a link loop or a link up the tree: its files are read once
                walked.add(real)
                if is_saved_dataset(path):
                    found.append(path)
                else:
                    pending.append(path)
            elif kind == "file":
                if named_like_data:
                    found.append(path)
            elif named_like_data:
                raise IlpDataError(
                    f"{path}: {kind or 'vanished while the folder was read'}; "
                    "fix it or remove it from the data folder"
                )
    return sorted(found)


def load_samples(
    path: Path,
    must_learn: MustLearnSelector | None = None,
    taken: dict[str, Sample] | None = None,
) -> list[Sample]:
    """Read every record of one data file as a `Sample`, in file order.

    `taken` holds the samples already loaded from other files: ids stay unique across them.
    Raises `IlpDataError` for a file that cannot be read or holds no records.
    """
    samples = [sample_from_record(record, path, line) for line, record in read_records(path)]
    if not samples:
        raise IlpDataError(
            f"{path}: holds no records; add records or leave the file out of the ILP data"
        )
    if must_learn is not None:
        samples = [
            replace(s, must_learn=True) if not s.must_learn and must_learn.matches(s) else s
            for s in samples
        ]
    return unique_ids(samples, {} if taken is None else taken)


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield `(line or row, record)` for each record of a data file.

    Raises `IlpDataError` naming the file (and line) for anything that cannot be read.
    """
    for line, record in _parse(path):
        problem = _structure_problem(record)
        if problem is not None:
            raise IlpDataError(f"{path}:{line}: {problem}")
        yield line, record


def _parse(path: Path) -> Iterator[tuple[int, Any]]:
    if path.is_dir() or path.suffix.lower() in TABLE_SUFFIXES:
        yield from _read_table(path)
        return
    kind = _kind(path)
    if kind != "file":  # a FIFO would block the read for ever
        raise IlpDataError(f"{path}: {kind or 'no such file'}; give a regular data file")
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


def _structure_problem(record: Any) -> str | None:
    """Why a parsed record is too deep or too large to handle, or None.

    Iterative, so that it cannot itself overflow the stack; counting every value visited also
    stops YAML alias bombs and self-referencing YAML anchors.
    """
    pending: list[tuple[Any, int]] = [(record, 1)]
    seen = 0
    while pending:
        value, depth = pending.pop()
        seen += 1
        if seen > MAX_VALUES:
            return (
                f"the record holds more than {MAX_VALUES:,} values (YAML aliases that expand "
                "without bound?); split it or remove the aliases"
            )
        if isinstance(value, Mapping):
            children: Iterable[Any] = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            return (
                f"the record is nested more than {MAX_DEPTH} levels deep; "
                "flatten it (pytest-ilp reads records at most this deep)"
            )
        pending.extend((child, depth + 1) for child in children)
    return None


def _too_deep(where: str) -> IlpDataError:
    return IlpDataError(
        f"{where}: the record is nested too deeply to parse (more than {MAX_DEPTH} levels are "
        "refused); flatten it"
    )


def _too_long_integer(where: str) -> IlpDataError:
    return IlpDataError(
        f"{where}: an integer of more than {MAX_INT_DIGITS} digits, which Python does not "
        "read; write it as a string"
    )


def _read_jsonl(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is JSON text
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IlpDataError(
                f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno}); "
                "each line of a .jsonl file must hold one JSON record: fix or remove the line"
            ) from None
        except RecursionError:
            raise _too_deep(f"{path}:{number}") from None
        except ValueError:  # int() refusing a number of more than 4300 digits
            raise _too_long_integer(f"{path}:{number}") from None
        yield number, record


def _read_json(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IlpDataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise _too_deep(f"{path}:{_line_of(text, max(0, _deep_position(text)))}") from None
    except ValueError:
        digits = re.search(rf"\d{{{MAX_INT_DIGITS + 1},}}", text)
        line = _line_of(text, digits.start() if digits else 0)
        raise _too_long_integer(f"{path}:{line}") from None
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
        yield _line_of(text, position), record
        position = end


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _deep_position(text: str, comments: bool = False) -> int:
    """Where JSON (or YAML flow) text first opens more than `MAX_DEPTH` brackets, or -1.

    Brackets inside double-quoted strings do not count, nor, with `comments`, after a YAML
    comment's `#`.
    """
    depth, in_string, escaped, in_comment = 0, False, False, False
    for position, char in enumerate(text):
        if in_comment:
            in_comment = char != "\n"
        elif in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif comments and char == "#" and (position == 0 or text[position - 1] in " \t\n"):
            in_comment = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return position
        elif char in "]}":
            depth -= 1
    return -1


def _read_yaml(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    # PyYAML's scanner takes quadratic time in the depth of flow collections ("[[[[...") and
    # its composer recurses: refuse a too-deep one before parsing.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        deep = _deep_position(text, comments=True)
        if deep >= 0:
            raise _too_deep(f"{path}:{_line_of(text, deep)}")
    try:  # the reader checks the characters as the loader is made
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise IlpDataError(f"{path}: not valid YAML ({exc})") from None
    line = 1
    try:
        root = loader.get_single_node()
        if root is None:
            return
        if isinstance(root, yaml.MappingNode):
            nodes = [root]
        elif isinstance(root, yaml.SequenceNode):
            nodes = root.value
        else:
            raise IlpDataError(f"{path}: expected a list of records at the top level")
        for node in nodes:
            line = node.start_mark.line + 1
            _read_as_text(node)
            yield line, loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise IlpDataError(f"{where}: not valid YAML ({exc.problem or exc})") from None
    except yaml.YAMLError as exc:
        raise IlpDataError(f"{path}: not valid YAML ({exc})") from None
    except RecursionError:
        raise _too_deep(f"{path}:{loader.get_mark().line + 1}") from None
    except ValueError as exc:  # a constructor's int() or date(): 5,000 digits, February 30
        raise IlpDataError(f"{path}:{line}: a value YAML cannot read ({exc})") from None
    finally:
        loader.dispose()


def _read_as_text(record: yaml.Node) -> None:
    """Make the plain scalars of `TEXT_FIELDS` strings, as written: `id: 010` is "010"."""
    if not isinstance(record, yaml.MappingNode):
        return
    for key, value in record.value:
        if not (isinstance(key, yaml.ScalarNode) and key.value in TEXT_FIELDS):
            continue
        scalars = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for scalar in scalars:
            if (
                isinstance(scalar, yaml.ScalarNode)
                and scalar.style is None  # plain, not quoted
                and not _YAML_NULL.match(scalar.value)
            ):
                scalar.tag = _YAML_STR


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
        if not path.is_dir() and _parquet_rows(path) == 0:  # datasets cannot build 0 rows
            raise IlpDataError(
                f"{path}: holds no records; add records or leave the file out of the ILP data"
            ) from None
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


def _parquet_rows(path: Path) -> int | None:
    try:
        import pyarrow.parquet  # type: ignore[import-untyped]

        return int(pyarrow.parquet.read_metadata(path).num_rows)
    except Exception:  # not Parquet at all: the caller reports datasets' own error
        return None


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
