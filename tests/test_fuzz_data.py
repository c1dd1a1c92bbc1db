"""Property-based fuzzing of the data loader: any file a user (or an attacker) hands pytest-ilp
becomes samples, each an item or a problem, or one clear error naming the file; never a
traceback, a hang, or a record that silently disappears.

Records are built from the formats pytest-ilp reads, then broken: fields of every JSON and YAML
type, lone surrogates, stop tokens, pytest's own separators, deep nesting, huge integers, and
text cut or spliced at random. Bounded: a few hundred examples, a fixed seed under CI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ilp.core.cache import stable_hash
from pytest_ilp.core.datafiles import load_samples, read_records
from pytest_ilp.core.datapaths import expand_data_paths
from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.samples import content_id
from pytest_ilp.report.records import json_text

CI = bool(os.environ.get("CI"))
FUZZ = settings(
    max_examples=300,
    deadline=None,  # a shared CI machine: time is bounded by the example count
    derandomize=CI,  # the same cases on every CI run
    database=None if CI else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

FIELDS = [
    "id", "prompt", "completion", "response", "instruction", "input", "output", "messages",
    "conversations", "role", "content", "from", "value", "stage", "tags", "must_learn", "meta",
]  # fmt: skip
TRICKY = ["", " ", "<|end|>", " foo<|end|> bar", "a::b", "q[1]", "\u2028", "\x00", "\ud800", "ü"]

texts = st.one_of(
    st.sampled_from(TRICKY),
    st.text(st.characters(exclude_categories=()), max_size=12),  # surrogates included
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.just(10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS) | texts, inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def messages(draw: st.DrawFn) -> list[Any]:
    turns = [
        {"role": draw(st.sampled_from(["user", "system"])), "content": draw(texts)},
        {"role": "assistant", "content": draw(texts)},
    ]
    return draw(st.sampled_from([turns, turns[:1], turns + turns]))


@st.composite
def records(draw: st.DrawFn) -> Any:
    """A record of a known format, then (usually) damaged: a field retyped, added or dropped."""
    kind = draw(st.sampled_from(["prompt", "alpaca", "messages", "sharegpt", "trl", "junk"]))
    record: dict[str, Any]
    if kind == "prompt":
        record = {"prompt": draw(texts), "completion": draw(texts)}
    elif kind == "alpaca":
        record = {"instruction": draw(texts), "input": draw(texts), "output": draw(texts)}
    elif kind == "messages":
        record = {"messages": draw(messages())}
    elif kind == "sharegpt":
        record = {
            "conversations": [
                {"from": draw(st.sampled_from(["human", "gpt", "alien"])), "value": draw(texts)}
                for _ in range(draw(st.integers(1, 3)))
            ]
        }
    elif kind == "trl":
        turns = draw(messages())
        record = {"prompt": turns[:-1], "completion": turns[-1:]}
    else:
        return draw(values)
    if draw(st.booleans()):
        record["id"] = draw(st.one_of(texts, st.integers(-5, 10**30), values))
    for _ in range(draw(st.integers(0, 2))):
        record[draw(st.sampled_from(FIELDS))] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        nest: Any = draw(scalars)
        for _ in range(draw(st.sampled_from([70, 400]))):
            nest = [nest]
        record["meta"] = {"deep": nest}
    return record


def serialize(suffix: str, batch: list[Any], ascii_only: bool) -> str:
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in batch)
    if suffix == ".json":
        return json.dumps(batch if len(batch) != 1 else batch[0], ensure_ascii=ascii_only)
    # YAML refuses to write a lone surrogate; such records are written as JSON, which is YAML.
    try:
        return yaml.safe_dump(batch, allow_unicode=not ascii_only, sort_keys=False)
    except (yaml.YAMLError, RecursionError):
        return json.dumps(batch)


@st.composite
def data_files(draw: st.DrawFn) -> tuple[str, bytes, list[Any] | None]:
    """(suffix, bytes, the records when the text was left whole, else None)."""
    suffix = draw(st.sampled_from([".jsonl", ".json", ".yaml"]))
    batch = draw(st.lists(records(), max_size=4))
    text = serialize(suffix, batch, draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")
    cut = draw(st.integers(0, 3))
    if cut == 1 and raw:  # truncated, as by a crash during the write
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif cut == 2:  # a few bytes spliced in: broken syntax or encoding
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    return suffix, raw, batch if cut == 0 else None


def check_loaded(path: Path, expected: list[Any] | None) -> None:
    """The property: a clear error naming the file, or one well-formed sample per record."""
    try:
        assert expand_data_paths([path]) == [path]
        samples = load_samples(path)
    except IlpDataError as exc:
        message = str(exc)
        assert message.startswith(f"{path}:"), message
        assert "Traceback" not in message
        return
    records_read = list(read_records(path))
    assert len(samples) == len(records_read) > 0  # no record dropped
    if expected is not None and path.suffix != ".json":
        assert len(samples) == len(expected)
    for sample, (line, _) in zip(samples, records_read):
        assert sample.line == line
        assert isinstance(sample.id, str) and sample.id.strip()
        sample.id.encode("utf-8")
        if sample.problem is not None:  # an item that errors with this text
            assert isinstance(sample.problem, str) and sample.problem
            continue
        assert isinstance(sample.target, str) and sample.target.strip()
        assert (sample.prompt is None) != (sample.messages is None)
        json_text(sample.content_key()).encode("utf-8")
        stable_hash(sample.content_key())
        content_id(sample)


@FUZZ
@given(data_files())
def test_any_data_file_loads_as_samples_or_fails_naming_the_file(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, bytes, list[Any] | None]
) -> None:
    suffix, raw, expected = case
    path = tmp_path_factory.mktemp("fuzz") / f"data{suffix}"
    path.write_bytes(raw)
    check_loaded(path, expected)


@FUZZ
@given(st.lists(records(), min_size=1, max_size=4, unique_by=lambda r: json.dumps(r)))
def test_records_of_known_formats_with_clean_text_are_accepted(
    tmp_path_factory: pytest.TempPathFactory, batch: list[Any]
) -> None:
    """Correct acceptance: a record of a known format whose fields have the right types becomes
    a checkable sample, exactly as written."""
    clean = [
        {**r, "id": f"r{i}"} for i, r in enumerate(batch) if isinstance(r, dict) and _is_clean(r)
    ]
    path = tmp_path_factory.mktemp("clean") / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in clean) or "\n", encoding="utf-8")
    if not clean:
        with pytest.raises(IlpDataError, match="holds no records"):
            load_samples(path)
        return
    samples = load_samples(path)
    assert [s.id for s in samples] == [r["id"] for r in clean]
    for sample, record in zip(samples, clean):
        assert sample.problem is None, (record, sample.problem)
        assert sample.target == record.get("completion", record.get("output"))


def _is_clean(record: dict[str, Any]) -> bool:
    """Only the fields of one format, each a string of real text, ending in a target."""

    def text(value: Any) -> bool:
        return isinstance(value, str) and value.strip() != "" and _unicode(value)

    if set(record) - {"id"} == {"prompt", "completion"}:
        prompt, completion = record["prompt"], record["completion"]
        return text(prompt) and text(completion)
    if set(record) - {"id"} == {"instruction", "input", "output"}:
        return all(text(record[k]) for k in ("instruction", "output")) and (
            isinstance(record["input"], str) and _unicode(record["input"])
        )
    return False


def _unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(FUZZ, max_examples=2)
@given(st.lists(data_files(), min_size=25, max_size=25))
def test_a_fuzzed_data_folder_collects_every_record_or_names_the_file(
    pytester: pytest.Pytester, corpus: list[tuple[str, bytes, list[Any] | None]]
) -> None:
    """The same property through pytest itself: in a folder of fuzzed files, each file's
    records are all items, or the file is a collection error; nothing else happens."""
    folder = pytester.mkdir(f"corpus{len(list(pytester.path.glob('corpus*')))}")
    for number, (suffix, raw, _) in enumerate(corpus):
        (folder / f"data{number:02d}{suffix}").write_bytes(raw)
    (pytester.path / "config.json").write_text('{"model_type": "llama"}')
    recorder = pytester.inline_run(
        "--ilp-checkpoint=.",
        f"--ilp-data={folder.name}",
        "--collect-only",
        "--continue-on-collection-errors",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
    )
    failed = {
        Path(r.nodeid).name: r.longreprtext
        for r in recorder.getreports("pytest_collectreport")
        if r.failed
    }
    items: dict[str, int] = {}
    for call in recorder.getcalls("pytest_itemcollected"):
        name = Path(call.item.nodeid.split("::")[0]).name
        items[name] = items.get(name, 0) + 1
    for path in sorted(folder.iterdir()):
        if path.name in failed:
            assert str(path) in failed[path.name] and "Traceback" not in failed[path.name]
            continue
        assert items.get(path.name) == len(list(read_records(path))), path.name
    assert recorder.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
