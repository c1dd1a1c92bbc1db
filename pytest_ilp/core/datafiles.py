"""Read SFT data files into samples: JSONL, JSON (a list of records, or one record), YAML (a
list of records), and, when the `datasets` package is installed, Parquet files and datasets
saved with `save_to_disk`.

A file that cannot be parsed (bad syntax, a record nested deeper than `MAX_DEPTH`, an integer
longer than Python reads, no records at all) raises `IlpDataError` naming the file and line.
Each record becomes a `Sample` through `samples.sample_from_record`.

In YAML the ``id``, ``stage`` and ``tags`` scalars are read as the text written (`TEXT_FIELDS`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from pytest_ilp.core.datapaths import kind_of
from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.samples import (
    TABLE_SUFFIXES,
    MustLearnSelector,
    Sample,
    sample_from_record,
    unique_ids,
)

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
    kind = kind_of(path)
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
