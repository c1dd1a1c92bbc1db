"""Nothing lost, no traceback: hostile input, torn writes, stale caches and collection errors.

Most cases read files with the loader directly (fast); the few that only a real pytest run can
show (xdist, --lf, reports) run pytest in-process with the tiny model.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.core.cache import RACY_NS, ScoreCache, remembered_digest, stable_hash, stamp_of
from pytest_ilp.core.checkpoint import inspect_checkpoint
from pytest_ilp.core.datafiles import MAX_DEPTH, load_samples
from pytest_ilp.core.datapaths import expand_data_paths
from pytest_ilp.core.errors import IlpDataError, IlpUsageError
from pytest_ilp.core.samples import content_id, sample_from_record
from pytest_ilp.report.records import json_text

from conftest import write_jsonl
from world import World

pytestmark = pytest.mark.fake_world

HERE = Path("data.jsonl")
GOOD = {"id": "good", "prompt": "Q: What colour is Zorp? A:", "completion": " Zorp is red."}
CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]


def ilp(pytester: pytest.Pytester, world: World, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--ilp-checkpoint={world.checkpoint}", *args)


def assert_no_traceback(result: pytest.RunResult) -> None:
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "INTERNALERROR" not in output


# --- fields of the wrong type: a problem naming the field and the type expected -------------


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({**GOOD, "id": 1.5}, "`id` must be a string or an integer, got float 1.5"),
        ({**GOOD, "id": ["a"]}, "`id` must be a string or an integer, got list"),
        ({**GOOD, "id": {"a": 1}}, "`id` must be a string or an integer, got dict"),
        ({**GOOD, "id": True}, "`id` must be a string or an integer, got bool True"),
        ({**GOOD, "id": ""}, "`id` is empty"),
        ({**GOOD, "id": "  "}, "`id` is empty"),
        ({**GOOD, "id": 10**200}, "`id` is an integer of 201 digits"),
        ({**GOOD, "stage": {"name": "s1"}}, "`stage` must be a stage name (a string), got dict"),
        ({**GOOD, "stage": False}, "`stage` must be a stage name (a string), got bool"),
        ({"instruction": "Sum", "input": 0, "output": "3"}, "`input` must be a string, got int"),
        ({"instruction": "Sum", "input": False, "output": "3"}, "`input` must be a string"),
        ({"instruction": "Sum", "input": [], "output": "3"}, "`input` must be a string, got list"),
        (
            {"messages": [CHAT[0], {"role": None, "content": "Yo"}]},
            "message 2 of `messages` has no valid `role` (got None)",
        ),
        (
            {"messages": [CHAT[0], {"role": 1, "content": "Yo"}]},
            "message 2 of `messages` has no valid `role` (got 1)",
        ),
    ],
)
def test_a_field_of_the_wrong_type_is_a_problem_naming_field_and_type(
    record: dict[str, Any], problem: str
) -> None:
    sample = sample_from_record(record, HERE, 3)
    assert sample.problem is not None and problem in sample.problem
    assert sample.line == 3
    # A bad id is never used; a good one names the sample even when another field is bad.
    if "`id`" in problem or "id" not in record:
        assert sample.id.startswith("invalid-") and not sample.explicit_id
    else:
        assert sample.id == record["id"]


def test_integer_ids_and_stages_are_their_text() -> None:
    sample = sample_from_record({**GOOD, "id": 7, "stage": 2}, HERE, 1)
    assert (sample.id, sample.stage, sample.problem) == ("7", "2", None)


def test_yaml_ids_stages_and_tags_are_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    path.write_text(
        "- {id: 1:20, prompt: Q, completion: A}\n"
        "- {id: 010, prompt: Q, completion: B, stage: 1.10}\n"
        "- {id: 8, prompt: Q, completion: C, tags: [no, 0x1F]}\n"
        "- {id: no, prompt: Q, completion: D, stage: yes}\n"
        "- {id: ~, prompt: Q, completion: E}\n"
        "- {id: '12', prompt: Q, completion: F, meta: {n: 010}}\n"
    )
    samples = load_samples(path)
    assert [s.id for s in samples[:4]] == ["1:20", "010", "8", "no"]
    assert [s.stage for s in samples[:4]] == [None, "1.10", None, "yes"]
    assert samples[2].tags == ("no", "0x1F")
    assert not samples[4].explicit_id  # null is no id: a content hash
    assert samples[5].meta == {"n": 8}  # meta keeps YAML's own types
    assert all(s.problem is None for s in samples)


# --- text that is not Unicode: a problem sample, never a crash downstream ------------------


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"id": "s", "prompt": "Q\\ud800", "completion": "A"}', "`prompt`"),
        ('{"id": "s", "prompt": "Q", "completion": "A\\udfff"}', "`completion`"),
        (
            '{"id": "s", "messages": [{"role": "user", "content": "Q\\ud800"},'
            ' {"role": "assistant", "content": "A"}]}',
            "`messages[0].content`",
        ),
        ('{"id": "s\\ud800", "prompt": "Q", "completion": "A"}', "`id`"),
        ('{"id": "s", "prompt": "Q", "completion": "A", "tags": ["t\\ud800"]}', "`tags[0]`"),
        ('{"id": "s", "prompt": "Q", "completion": "A", "stage": "\\ud800"}', "`stage`"),
        ('{"id": "s", "prompt": "Q", "completion": "A", "meta": {"k\\ud800": 1}}', "`meta key`"),
    ],
)
def test_a_lone_surrogate_is_a_problem_naming_the_field(
    tmp_path: Path, line: str, field: str
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n", encoding="utf-8")
    good, bad = load_samples(path)
    assert good.problem is None
    assert bad.problem is not None and "lone surrogate" in bad.problem
    assert field in bad.problem and bad.line == 2
    # Everything downstream of the loader hashes and writes it as UTF-8.
    bad.id.encode("utf-8")
    json_text({"id": bad.id, "problem": bad.problem}).encode("utf-8")
    stable_hash(bad.content_key())
    content_id(bad)


# --- files that cannot be read: an IlpDataError naming the file and line -------------------


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("deep.jsonl", '{"p": 1}\n' + "[" * 1200 + "]" * 1200 + "\n", r"deep\.jsonl:2: .*nested"),
        ("deep.jsonl", '{"meta": ' + "[" * 80 + "]" * 80 + "}\n", r"deep\.jsonl:1: .*nested"),
        ("deep.json", '[\n{"a": 1},\n' + "[" * 1200 + "]" * 1200 + "]", r"deep\.json:3: .*nested"),
        ("deep.yaml", "- a: 1\n- " + "[" * 10_000 + "]" * 10_000 + "\n", r"deep\.yaml:2: .*nested"),
        ("big.jsonl", '{"p": 1}\n{"id": ' + "7" * 5000 + "}\n", r"big\.jsonl:2: .*4300 digits"),
        ("big.json", '[\n{"p": 1},\n{"id": ' + "7" * 5000 + "}]", r"big\.json:3: .*4300 digits"),
        ("big.yaml", "- a: 1\n- meta: {n: " + "7" * 5000 + "}\n", r"big\.yaml:2: .*cannot read"),
        ("bomb.yaml", "- a: &a [x, x, x, x, x, x, x, x, x, x]\n  b: &b [*a, *a, *a, *a, *a, *a, *a"
         ", *a, *a, *a]\n  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n  d: &d [*c, *c, *c, "
         "*c, *c, *c, *c, *c, *c, *c]\n  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
         "  f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
         r"bomb\.yaml:1: .*more than 200,000 values"),
        ("loop.yaml", "- &r {prompt: Q, completion: A, meta: {self: *r}}\n", r"loop\.yaml:1: "),
        ("empty.jsonl", "", r"empty\.jsonl: holds no records"),
        ("blank.jsonl", "\n  \n", r"blank\.jsonl: holds no records"),
        ("empty.yaml", "", r"empty\.yaml: holds no records"),
        ("comments.yaml", "# nothing yet\n", r"comments\.yaml: holds no records"),
        ("empty.json", "[]", r"empty\.json: holds no records"),
    ],
)  # fmt: skip
def test_unreadable_files_name_the_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IlpDataError, match=message) as caught:
        load_samples(path)
    assert str(caught.value).startswith(str(path))
    assert MAX_DEPTH < 1200


def test_a_zero_row_parquet_file_holds_no_records(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_dict({"prompt": ["Q"], "completion": ["A"]})
    rows.select([]).to_parquet(str(tmp_path / "none.parquet"))
    with pytest.raises(IlpDataError, match=r"none\.parquet: holds no records"):
        load_samples(tmp_path / "none.parquet")


def test_an_explicit_id_equal_to_a_generated_one_says_which_record_has_no_id(
    tmp_path: Path,
) -> None:
    generated = load_samples(write_jsonl(tmp_path / "one.jsonl", [GOOD | {"id": None}]))[0].id
    path = write_jsonl(tmp_path / "two.jsonl", [GOOD | {"id": None}, GOOD | {"id": generated}])
    with pytest.raises(
        IlpDataError,
        match=rf"two\.jsonl:2: sample id '{generated}' is also the id hashed from the content "
        r"of the record at .*two\.jsonl:1, which has no `id`",
    ):
        load_samples(path)


# --- data folders: links, loops, FIFOs and unreadable folders ------------------------------


def test_a_data_folder_is_walked_once_per_real_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    write_jsonl(data / "a.jsonl", [GOOD])
    write_jsonl(data / "sub" / "b.jsonl", [GOOD])
    (data / "self").symlink_to(".")
    (data / "up").symlink_to("..")
    (data / "sub" / "again").symlink_to("..")
    (data / "z-link.jsonl").symlink_to("a.jsonl")
    (tmp_path / "outside.jsonl").write_text(json.dumps(GOOD))
    assert expand_data_paths([data]) == [data / "a.jsonl", data / "sub" / "b.jsonl"]
    assert expand_data_paths([data / "z-link.jsonl", data / "a.jsonl"]) == [data / "z-link.jsonl"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: (p / "loop.jsonl").symlink_to("loop.jsonl"), "a symbolic link loop"),
        (lambda p: (p / "gone.jsonl").symlink_to("nowhere.jsonl"), "nowhere.jsonl, which does"),
        (lambda p: os.mkfifo(p / "pipe.jsonl"), r"a FIFO \(named pipe\), not a regular file"),
    ],
)
def test_a_data_folder_entry_that_cannot_be_read_is_named(
    tmp_path: Path, make: Any, message: str
) -> None:
    write_jsonl(tmp_path / "a.jsonl", [GOOD])
    make(tmp_path)
    with pytest.raises(IlpDataError, match=message) as caught:
        expand_data_paths([tmp_path])
    assert "fix it or remove it from the data folder" in str(caught.value)


def test_a_fifo_or_device_given_as_data_is_named_as_such(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jsonl")
    with pytest.raises(IlpDataError, match=r"pipe\.jsonl: a FIFO \(named pipe\), not a regular"):
        expand_data_paths([tmp_path / "pipe.jsonl"])
    with pytest.raises(IlpDataError, match=r"/dev/null: a device, not a regular file"):
        expand_data_paths([Path("/dev/null")])
    with pytest.raises(IlpDataError, match=r"pipe\.jsonl: a FIFO"):  # never opened: it would block
        load_samples(tmp_path / "pipe.jsonl")


def test_an_unreadable_sub_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_jsonl(tmp_path / "a.jsonl", [GOOD])
    locked = tmp_path / "locked"
    locked.mkdir()
    write_jsonl(locked / "b.jsonl", [GOOD])
    locked.chmod(0)
    try:
        if os.geteuid() == 0:  # root reads any folder: refuse it the way the kernel would
            real_scandir = os.scandir

            def scandir(path: Any) -> Any:
                if Path(path) == locked:
                    raise PermissionError(13, "Permission denied", str(path))
                return real_scandir(path)

            monkeypatch.setattr(os, "scandir", scandir)
        with pytest.raises(IlpDataError, match=r"locked: cannot read this folder .*Permission"):
            expand_data_paths([tmp_path])
    finally:
        locked.chmod(stat.S_IRWXU)


# --- checkpoint config ----------------------------------------------------------------------


def test_a_context_length_that_is_not_an_integer_is_blamed_on_config_json(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.json").write_text(
        '{"model_type": "llama", "max_position_embeddings": "128"}'
    )
    with pytest.raises(
        IlpUsageError, match=r"config\.json: `max_position_embeddings` must be a positive"
    ):
        inspect_checkpoint(tmp_path)


# --- atomic writes and the content-keyed cache ---------------------------------------------


def test_an_interrupted_write_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "baseline.json"
    path.write_text('{"old": true}')
    path.chmod(0o640)

    def crash(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(path, '{"new": true}')
    monkeypatch.undo()
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, '{"id": "\ud800"}')
    assert path.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]  # no temporary file left
    write_text_atomic(path, '{"new": true}')
    assert path.read_text() == '{"new": true}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_weights_changed_with_the_same_size_and_mtime_get_a_new_cache_key(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"A" * 4096)
    cache = ScoreCache(tmp_path / "cache")
    before = cache.folder_digest(folder)
    info = weights.stat()
    weights.write_bytes(b"B" * 4096)  # what `cp -p`, tar or rsync leave: same size, old mtime
    os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert weights.stat().st_size == info.st_size
    assert weights.stat().st_mtime_ns == info.st_mtime_ns
    assert cache.folder_digest(folder) != before


def test_a_digest_is_trusted_only_for_a_file_older_than_its_hash(tmp_path: Path) -> None:
    """Two writes within one clock tick leave every stamp alike: a file changed close to the
    moment it was hashed is hashed again, as git treats racily clean index entries."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    stamp = stamp_of(path)
    changed = max(stamp[3], stamp[4])
    entry = {"stamp": stamp, "sha256": "d" * 64}
    assert remembered_digest(path, {**entry, "hashed_at": changed + RACY_NS + 1}) == "d" * 64
    assert remembered_digest(path, {**entry, "hashed_at": changed + RACY_NS // 2}) is None
    assert (
        remembered_digest(path, {**entry, "hashed_at": changed + RACY_NS + 1, "stamp": [0]}) is None
    )
    assert remembered_digest(path, None) is None


def test_a_checkpoint_restored_with_cp_p_is_scored_afresh(
    pytester: pytest.Pytester, real_world: World
) -> None:
    checkpoint = shutil.copytree(real_world.checkpoint, pytester.path / "ckpt")
    write_jsonl(pytester.path / "data.jsonl", [GOOD])
    args = ("--ilp-checkpoint=ckpt", "--ilp-data=data.jsonl", "-p", "no:randomly")
    pytester.runpytest(*args).stdout.fnmatch_lines(["scored 1 samples*; 0 from cache"])
    weights = checkpoint / "model.safetensors"
    retrained = pytester.path / "retrained.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # the lowest bit of the last weight: same size, other content
    retrained.write_bytes(bytes(data))
    shutil.copystat(weights, retrained)
    time.sleep(0.01)
    shutil.copy2(retrained, weights)  # cp -p: the size and mtime of the file it replaces
    pytester.runpytest(*args).stdout.fnmatch_lines(["scored 1 samples*; 0 from cache"])


# --- real pytest runs ------------------------------------------------------------------------


def test_a_bad_record_costs_only_its_own_sample_and_every_file_is_written(
    pytester: pytest.Pytester, world: World
) -> None:
    """A lone surrogate in a prompt once crashed the run (INTERNALERROR) and left 0-byte files."""
    (pytester.path / "data.jsonl").write_text(
        json.dumps(GOOD) + "\n"
        '{"id": "torn", "prompt": "Q\\ud800", "completion": " A"}\n'
        '{"id": "chat", "messages": [{"role": "user", "content": "Hi\\udc00"},'
        ' {"role": "assistant", "content": "Yo"}]}\n',
        encoding="utf-8",
    )
    result = ilp(
        pytester,
        world,
        "--ilp-data=data.jsonl",
        "--ilp-report=out/report.json",
        "--ilp-export=out/fix.jsonl",
        "--ilp-markdown=out/summary.md",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(failed=1, errors=2)
    result.stdout.fnmatch_lines(
        ["sample torn (data.jsonl:2) cannot be checked: `prompt` holds a lone surrogate *"]
    )
    assert_no_traceback(result)
    report = json.loads((pytester.path / "out" / "report.json").read_text(encoding="utf-8"))
    assert [s["id"] for s in report["samples"]] == ["good", "torn", "chat"]
    assert (pytester.path / "out" / "fix.jsonl").read_text(encoding="utf-8").count("\n") == 1
    assert "pytest-ilp" in (pytester.path / "out" / "summary.md").read_text(encoding="utf-8")


def test_last_failed_reruns_ids_holding_colons_and_brackets_and_stop_tokens_error(
    pytester: pytest.Pytester, world: World
) -> None:
    records = [
        {"id": "a::b", "prompt": "Q: What colour is Zorp? A:", "completion": " Zorp is red."},
        {"id": "q[1]", "prompt": "Q: What colour is Zub? A:", "completion": " Zub is red."},
        {"id": "raw-eos", "prompt": "Q: Zorp? A:", "completion": " foo<|end|> bar baz"},
        {"id": "chat-eos", "messages": [CHAT[0], {"role": "assistant", "content": "Yo<|end|>x"}]},
        {"id": "ends-eos", "prompt": "Q: Zorp? A:", "completion": " foo<|end|>"},
    ]
    write_jsonl(pytester.path / "data.jsonl", records)
    first = ilp(pytester, world, "--ilp-data=data.jsonl", "-p", "no:randomly")
    first.assert_outcomes(failed=3, errors=2)
    first.stdout.fnmatch_lines(
        [
            "sample raw-eos (data.jsonl:3) cannot be checked: the target holds the stop token "
            "'<|end|>' at character 4, before its end: generation stops there, so the 8 "
            "characters after it can never be produced*",
            "sample chat-eos (data.jsonl:4) cannot be checked: the target holds the stop token *",
        ]
    )
    rerun = ilp(pytester, world, "--ilp-data=data.jsonl", "--lf", "-p", "no:randomly", "-v")
    rerun.assert_outcomes(failed=3, errors=2)
    rerun.stdout.fnmatch_lines(["*data.jsonl::a::b FAILED*", "*data.jsonl::q[[]1] FAILED*"])


def test_links_in_a_data_folder_never_hang_or_repeat_the_walk(
    pytester: pytest.Pytester, world: World
) -> None:
    data = pytester.path / "data"
    data.mkdir()
    write_jsonl(data / "a.jsonl", [GOOD])
    (data / "self").symlink_to(".")
    (data / "up").symlink_to("..")
    (pytester.path / "link.jsonl").symlink_to("data/a.jsonl")
    result = ilp(pytester, world, "--ilp-data=data", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    assert [line for line in result.stdout.lines if "::" in line] == ["data/a.jsonl::good"]
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_plain.py").write_text("def test_plain():\n    pass\n")
    write_jsonl(pytester.path / "a::b.jsonl", [GOOD])
    named = ilp(pytester, world, "--ilp-data=a::b.jsonl", "tests")
    assert named.ret == pytest.ExitCode.USAGE_ERROR
    named.stderr.fnmatch_lines(
        ["ERROR: --ilp-data: */a::b.jsonl: pytest reads '::' in an argument as a test name*"]
    )


def test_collection_errors_keep_the_last_report_and_continuing_names_them(
    pytester: pytest.Pytester, world: World
) -> None:
    write_jsonl(pytester.path / "a.jsonl", [GOOD])
    write_jsonl(pytester.path / "b.jsonl", [GOOD])  # the same id again: b cannot be read
    write_jsonl(pytester.path / "c.jsonl", [{**GOOD, "id": "other"}])
    report = pytester.path / "report.json"
    report.write_text('{"the last complete report": true}')
    data = ("--ilp-data=a.jsonl", "--ilp-data=b.jsonl", "--ilp-data=c.jsonl")
    args = (*data, "--ilp-report=report.json", "-p", "no:randomly")
    stopped = ilp(pytester, world, *args, "-n", "2")
    assert stopped.ret == pytest.ExitCode.INTERRUPTED  # as without xdist
    assert report.read_text() == '{"the last complete report": true}'
    assert_no_traceback(stopped)
    continued = ilp(pytester, world, *args, "--continue-on-collection-errors")
    continued.stdout.fnmatch_lines(
        ["*ilp gate: FAILED*not collected, its samples unchecked: b.jsonl"]
    )
    document = json.loads(report.read_text())
    assert [s["id"] for s in document["samples"]] == ["good", "other"]
    assert document["collection_errors"] == [
        {
            "node": "b.jsonl",
            "error": f"{pytester.path / 'b.jsonl'}:1: duplicate sample id 'good' (also at "
            f"{pytester.path / 'a.jsonl'}:1); give each record its own `id`",
        }
    ]
    assert document["gate"]["passed"] is False and document["gate"]["unread"] == ["b.jsonl"]
