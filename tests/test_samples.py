"""Reading data files: formats, ids, line numbers, and problems reported, never dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_ilp.core.datafiles import load_samples
from pytest_ilp.core.datapaths import expand_data_paths
from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.samples import MustLearnSelector, sample_from_record

from conftest import write_jsonl

HERE = Path("data.jsonl")


def test_prompt_completion_and_prompt_response_records() -> None:
    a = sample_from_record({"prompt": "Q", "completion": " A"}, HERE, 1)
    b = sample_from_record({"prompt": "Q", "response": " A"}, HERE, 2)
    assert (a.format, a.prompt, a.target, a.messages) == ("prompt_completion", "Q", " A", None)
    assert (b.prompt, b.target) == ("Q", " A")


def test_alpaca_record_joins_instruction_and_input_with_a_blank_line() -> None:
    with_input = sample_from_record({"instruction": "Sum", "input": "1 2", "output": "3"}, HERE, 1)
    without = sample_from_record({"instruction": "Sum", "input": "", "output": "3"}, HERE, 2)
    assert (with_input.format, with_input.prompt, with_input.target) == (
        "alpaca",
        "Sum\n\n1 2",
        "3",
    )
    assert without.prompt == "Sum"


def test_messages_record_targets_the_last_assistant_turn() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Farewell"},
    ]
    sample = sample_from_record({"messages": messages}, HERE, 1)
    assert sample.format == "messages" and sample.target == "Farewell"
    assert [m["content"] for m in sample.messages or ()] == ["Be brief.", "Hi", "Hello", "Bye"]


def test_sharegpt_record_maps_speakers_to_roles() -> None:
    record = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}
    sample = sample_from_record(record, HERE, 1)
    assert sample.format == "sharegpt" and sample.target == "Yo"
    assert sample.messages == ({"role": "user", "content": "Hi"},)


def test_trl_conversational_prompt_completion_is_a_chat_sample() -> None:
    record = {
        "prompt": [{"role": "user", "content": "Hi"}],
        "completion": [{"role": "assistant", "content": "Yo"}],
    }
    sample = sample_from_record(record, HERE, 1)
    assert sample.is_chat and sample.target == "Yo"


def test_optional_fields_are_kept() -> None:
    record = {
        "prompt": "Q",
        "completion": "A",
        "id": 7,
        "stage": 2,
        "tags": ["safety", "math"],
        "must_learn": True,
        "meta": {"source": "x"},
    }
    sample = sample_from_record(record, HERE, 3)
    assert (sample.id, sample.stage, sample.tags, sample.must_learn) == (
        "7",
        "2",
        ("safety", "math"),
        True,
    )
    assert sample.meta == {"source": "x"} and sample.explicit_id and sample.line == 3


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"text": "just text"}, "no known record format in fields ['text']"),
        ({"prompt": "Q"}, "no `completion` (or `response`) field"),
        ({"prompt": "Q", "completion": "   "}, "the target is empty"),
        ({"prompt": "Q", "completion": 5}, "`completion` must be a string"),
        ({"messages": [{"role": "user", "content": "Hi"}]}, "ends with a 'user' turn"),
        ({"messages": []}, "`messages` must be a non-empty list"),
        ({"conversations": [{"from": "alien", "value": "x"}]}, "unknown ShareGPT speaker"),
        ({"prompt": "Q", "completion": "A", "must_learn": "yes"}, "`must_learn` must be true"),
        ({"prompt": "Q", "completion": "A", "tags": [1]}, "`tags` must be a list of strings"),
        (["not", "a", "mapping"], "a record must be a mapping, got list"),
    ],
)
def test_records_that_cannot_be_checked_carry_their_problem(record: object, problem: str) -> None:
    sample = sample_from_record(record, HERE, 4)
    assert sample.problem is not None and problem in sample.problem
    assert sample.line == 4 and sample.id


def test_content_hash_ids_are_stable_under_reordering(tmp_path: Path) -> None:
    records = [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(5)]
    forward = load_samples(write_jsonl(tmp_path / "a.jsonl", records))
    backward = load_samples(write_jsonl(tmp_path / "b.jsonl", records[::-1]))
    assert {s.id: s.target for s in forward} == {s.id: s.target for s in backward}
    assert len({s.id for s in forward}) == 5 and all(len(s.id) == 12 for s in forward)


def test_identical_records_without_ids_get_suffixes(tmp_path: Path) -> None:
    record = {"prompt": "Q", "completion": "A"}
    samples = load_samples(write_jsonl(tmp_path / "d.jsonl", [record, record, record]))
    base = samples[0].id
    assert [s.id for s in samples] == [base, f"{base}-2", f"{base}-3"]


def test_duplicate_explicit_ids_name_both_lines(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "x", "prompt": "Q", "completion": "A"},
            {"id": "x", "prompt": "R", "completion": "B"},
        ],
    )
    with pytest.raises(
        IlpDataError, match=r"d\.jsonl:2: duplicate sample id 'x' \(also at .*d\.jsonl:1\)"
    ):
        load_samples(path)


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "Q", "completion": "A"}\n\n{"prompt": "Q2", \n')
    with pytest.raises(IlpDataError, match=r"bad\.jsonl:3: not valid JSON"):
        load_samples(path)


def test_blank_jsonl_lines_are_skipped_but_line_numbers_kept(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text('\n{"prompt": "Q", "completion": "A"}\n\n{"prompt": "R", "completion": "B"}\n')
    assert [s.line for s in load_samples(path)] == [2, 4]


def test_unicode_line_separators_inside_jsonl_strings_are_text(tmp_path: Path) -> None:
    """json.dumps(ensure_ascii=False) writes U+2028 and U+0085 raw; they end no JSONL line."""
    path = tmp_path / "unicode.jsonl"
    records = [
        {"prompt": "one\u2028two", "completion": " a\x85b"},
        {"prompt": "R", "completion": "B"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\r\n")
    samples = load_samples(path)
    assert [(s.line, s.prompt, s.target) for s in samples] == [
        (1, "one\u2028two", " a\x85b"),
        (2, "R", "B"),
    ]


def test_json_array_records_know_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    records = [{"prompt": "Q", "completion": "A"}, {"prompt": "R", "completion": "B"}]
    path.write_text(json.dumps(records, indent=2))
    assert [s.line for s in load_samples(path)] == [2, 6]


def test_yaml_records_know_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    path.write_text(
        "- prompt: Q\n  completion: A\n"
        "- messages:\n  - {role: user, content: Hi}\n  - {role: assistant, content: Yo}\n"
    )
    samples = load_samples(path)
    assert [(s.line, s.format) for s in samples] == [(1, "prompt_completion"), (3, "messages")]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    path.write_text("- prompt: Q\n  completion: [unclosed\n")
    with pytest.raises(IlpDataError, match=r"data\.yaml:\d+: not valid YAML"):
        load_samples(path)


def test_parquet_and_saved_datasets_read_rows(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the datasets package is not installed")
    table = datasets.Dataset.from_list(
        [{"prompt": "Q", "completion": "A"}, {"prompt": "R", "completion": "B"}]
    )
    table.to_parquet(str(tmp_path / "data.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    from_parquet = load_samples(tmp_path / "data.parquet")
    from_disk = load_samples(tmp_path / "saved")
    assert [s.target for s in from_parquet] == [s.target for s in from_disk] == ["A", "B"]
    assert from_parquet[1].location.endswith("data.parquet:row 2")
    assert expand_data_paths([tmp_path]) == [tmp_path / "data.parquet", tmp_path / "saved"]


def test_unreadable_tables_and_yaml_name_the_file(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(
        IlpDataError, match=r"broken\.parquet: datasets could not read it as a Parquet"
    ):
        load_samples(tmp_path / "broken.parquet")
    (tmp_path / "bell.yaml").write_text("- prompt: ring \x07\n  completion: B\n")
    with pytest.raises(IlpDataError, match=r"bell\.yaml: not valid YAML"):
        load_samples(tmp_path / "bell.yaml")


def test_folders_expand_to_their_data_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "b.jsonl", [])
    write_jsonl(tmp_path / "sub" / "a.jsonl", [])
    (tmp_path / "notes.txt").write_text("not data")
    assert expand_data_paths([tmp_path]) == [tmp_path / "b.jsonl", tmp_path / "sub" / "a.jsonl"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.jsonl", "no such file or folder"),
        (lambda p: (p / "x.csv").write_text("a,b") and p / "x.csv", "unsupported data file type"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no data files"),
    ],
)
def test_bad_data_paths_say_what_is_wrong(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(IlpDataError, match=message):
        expand_data_paths([path])


def test_must_learn_selector_matches_tags_and_ids(tmp_path: Path) -> None:
    records = [
        {"id": "a", "prompt": "Q", "completion": "A", "tags": ["safety"]},
        {"id": "b", "prompt": "Q", "completion": "B"},
        {"id": "c", "prompt": "Q", "completion": "C"},
        {"id": "d", "prompt": "Q", "completion": "D", "must_learn": True},
    ]
    selector = MustLearnSelector(tags=frozenset({"safety"}), ids=frozenset({"c"}))
    samples = load_samples(write_jsonl(tmp_path / "d.jsonl", records), selector)
    assert [s.must_learn for s in samples] == [True, False, True, True]
