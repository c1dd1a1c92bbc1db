"""Choosing a criterion: its forms, where it is set and which wins, what the outputs say."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from pytest_ilp.api import score_checkpoint
from pytest_ilp.core.criteria import parse_criterion
from pytest_ilp.core.samples import sample_from_record

from conftest import write_jsonl
from world import World

pytestmark = pytest.mark.fake_world


def ilp(pytester: pytest.Pytester, world: World, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--ilp-checkpoint={world.checkpoint}", "-p", "no:randomly", *args)


def report_of(pytester: pytest.Pytester, name: str = "r.json") -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in json.loads((pytester.path / name).read_text())["samples"]}


# -- forms -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "spec"),
    [
        ("exact", "exact"),
        ("prefix:8", "prefix:8"),
        ({"prefix": 8}, "prefix:8"),
        ("token_accuracy: 0.9", "token_accuracy:0.9"),
        ({"nll": 1}, "nll:1"),
        ("choice", "choice:mean"),
        ({"choice": "sum"}, "choice:sum"),
        ("sampled", "sampled:n=5,temperature=0.7,min_pass=0.2,seed=0"),
        ("sampled:n=3,seed=4", "sampled:n=3,temperature=0.7,min_pass=0.2,seed=4"),
        (
            {"sampled": {"n": 3, "temperature": 0.2}},
            "sampled:n=3,temperature=0.2,min_pass=0.2,seed=0",
        ),
        ({"name": "sampled", "min_pass": 0.4}, "sampled:n=5,temperature=0.7,min_pass=0.4,seed=0"),
    ],
)
def test_every_written_form_reads_as_one_canonical_criterion(written: Any, spec: str) -> None:
    criterion = parse_criterion(written)
    assert criterion.spec == spec
    assert parse_criterion(criterion.spec) == criterion


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("greedy", "unknown criterion 'greedy'; choose one of exact, prefix"),
        ("prefix", "prefix needs a value, e.g. prefix:8"),
        ("prefix:0", "prefix must be an integer of at least 1"),
        ("token_accuracy:1.5", "token_accuracy must be a share in (0, 1]"),
        ("nll:-1", "must not be negative"),
        ("choice:max", "choice: score must be one of mean, sum"),
        ("sampled:temperature=0", "temperature 0 is greedy: use exact"),
        ("sampled:k=3", "sampled: unknown parameter(s) k; known: n, temperature"),
        ({"prefix": 8, "nll": 1}, "expected one criterion"),
        ("exact:3", "exact takes no parameters"),
    ],
)
def test_a_bad_criterion_says_what_is_wrong(written: Any, says: str) -> None:
    with pytest.raises(ValueError, match=None) as error:
        parse_criterion(written)
    assert says in str(error.value)


def test_a_record_with_a_bad_criterion_or_distractors_is_a_problem_sample(tmp_path: Any) -> None:
    bad = sample_from_record(
        {"prompt": "a", "completion": "b", "criterion": "prefix:x"}, tmp_path / "d.jsonl", 3
    )
    assert bad.problem is not None and bad.problem.startswith("`criterion`: prefix must be")
    empty = sample_from_record(
        {"prompt": "a", "completion": "b", "distractors": ["c", ""]}, tmp_path / "d.jsonl", 4
    )
    assert empty.problem is not None and "`distractors` must be a non-empty list" in empty.problem


# -- where it is set, and which wins -----------------------------------------------------------


def test_marker_beats_record_beats_ilp_yaml_rule_beats_the_run_setting(
    pytester: pytest.Pytester, world: World
) -> None:
    raw = world.raw_records
    write_jsonl(
        pytester.path / "data.jsonl",
        [
            {**raw[60], "criterion": {"token_accuracy": 0.5}},  # its own field
            {**raw[61], "tags": ["long"]},  # an ilp.yaml rule by tag
            raw[62],  # the run's setting
        ],
    )
    write_jsonl(pytester.path / "other.jsonl", [raw[63]])  # an ilp.yaml rule by file
    write_jsonl(
        pytester.path / "marked.jsonl", [{**raw[64], "criterion": "exact"}]
    )  # marker beats the record
    pytester.makefile(
        ".yaml",
        ilp=f"""
checkpoint: {world.checkpoint}
criterion: exact
criteria:
  - tags: [long]
    criterion: {{prefix: 3}}
  - files: [other.jsonl]
    criterion: normalized
""",
    )
    pytester.makepyfile(
        test_marked="""
import pytest, pytest_ilp

@pytest.mark.ilp_criterion("nll", 9.0)
@pytest.mark.ilp_dataset("marked.jsonl")
def test_it(ilp_sample):
    pytest_ilp.assert_learned(ilp_sample)
"""
    )
    result = pytester.runpytest(
        "-p", "no:randomly", "--ilp-data=data.jsonl", "--ilp-data=other.jsonl",
        "test_marked.py", "--ilp-criterion=nll:0.01", "--ilp-report=r.json",
    )  # fmt: skip
    criteria = {i: s["criterion"] for i, s in report_of(pytester).items()}
    assert criteria == {
        raw[60]["id"]: "token_accuracy:0.5",
        raw[61]["id"]: "prefix:3",
        raw[62]["id"]: "nll:0.01",  # the command line beats ilp.yaml's `criterion: exact`
        raw[63]["id"]: "normalized",
        raw[64]["id"]: "nll:9",
    }
    result.stdout.fnmatch_lines(
        ["criteria: nll:9 1, token_accuracy:0.5 1, prefix:3 1, nll:0.01 1, normalized 1"]
    )


def test_one_sample_judged_two_ways_in_one_run_is_a_usage_error(
    pytester: pytest.Pytester, world: World
) -> None:
    write_jsonl(pytester.path / "data.jsonl", world.raw_records[60:62])
    pytester.makepyfile(
        test_twice="""
import pytest

@pytest.mark.ilp_criterion(token_accuracy=0.5)
@pytest.mark.ilp_dataset("data.jsonl")
def test_it(ilp_sample):
    pass
"""
    )
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "test_twice.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    error = result.stderr.str()
    assert f"sample {world.raw_records[60]['id']} is judged by " in error
    assert "exact (data.jsonl::" in error
    assert "token_accuracy:0.5 (@pytest.mark.ilp_criterion of test_twice.py::test_it" in error
    assert "each sample is scored once" in error


def test_bad_criteria_on_the_command_line_and_in_markers_are_usage_and_collection_errors(
    pytester: pytest.Pytester, world: World
) -> None:
    write_jsonl(pytester.path / "data.jsonl", world.raw_records[60:61])
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "--ilp-criterion=token_accuracy:2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ilp-criterion: token_accuracy must be a share in (0, 1]*"])
    pytester.makepyfile(
        test_bad="""
import pytest

@pytest.mark.ilp_criterion("sampled", 5)
@pytest.mark.ilp_dataset("data.jsonl")
def test_it(ilp_sample):
    pass
"""
    )
    result = ilp(pytester, world, "test_bad.py")
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.ilp_criterion of *test_it: sampled takes named parameters*"]
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error


# -- what the outputs say ----------------------------------------------------------------------


def test_failure_report_junit_json_and_markdown_name_the_criterion(
    pytester: pytest.Pytester, world: World
) -> None:
    learned_or_not = world.raw_records[:2] + world.raw_records[60:64]
    records = [
        {**r, "distractors": [_other_colour(r["completion"]), r["completion"].split(",")[0] + "."]}
        for r in learned_or_not
    ]
    write_jsonl(pytester.path / "data.jsonl", records)
    result = ilp(
        pytester,
        world,
        "--ilp-data=data.jsonl",
        "--ilp-criterion=choice:sum",
        "--ilp-strict",
        "--ilp-report=r.json",
        "--ilp-markdown=s.md",
        "--junitxml=j.xml",
    )
    report = report_of(pytester)
    unlearned = [i for i, s in report.items() if s["learned"] is False]
    assert unlearned, "the held-out facts lose to a distractor"
    result.stdout.fnmatch_lines(
        [
            f"sample {unlearned[0]} * was not learned",
            "  criterion: choice (sum log-likelihood): target -* vs distractor ? * -*",
        ]
    )
    first = report[unlearned[0]]
    assert first["criterion"] == "choice:sum"
    options = first["criterion_figures"]["options"]
    record = next(r for r in records if r["id"] == unlearned[0])
    assert [o["text"] for o in options] == [record["completion"], *record["distractors"]]
    best = first["criterion_figures"]["best_distractor"]
    assert options[0]["loglik"] <= options[best + 1]["loglik"]
    properties = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in ET.parse(pytester.path / "j.xml").iter("testcase")
        for p in case.iter("property")
    }
    assert properties[(unlearned[0], "ilp_criterion")] == "choice:sum"
    assert properties[(unlearned[0], "ilp_criterion_best_distractor")] == str(best)
    markdown = (pytester.path / "s.md").read_text()
    assert "judged by `choice:sum`" in markdown
    assert "| criterion |" in markdown


def test_a_choice_sample_without_distractors_is_an_error_not_a_silent_pass(
    pytester: pytest.Pytester, world: World
) -> None:
    write_jsonl(pytester.path / "data.jsonl", world.raw_records[60:61])
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "--ilp-criterion=choice")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ['*cannot be checked: the choice criterion needs wrong responses*"distractors"*']
    )


def test_a_schema_1_report_is_still_read_as_a_baseline(
    pytester: pytest.Pytester, world: World
) -> None:
    write_jsonl(pytester.path / "data.jsonl", world.raw_records[:2])
    ilp(pytester, world, "--ilp-data=data.jsonl", "--ilp-report=r.json")
    old = json.loads((pytester.path / "r.json").read_text())
    old["schema"] = 1
    for record in old["samples"]:
        del record["criterion"], record["criterion_figures"]
    (pytester.path / "old.json").write_text(json.dumps(old))
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "--ilp-baseline=old.json")
    result.stdout.fnmatch_lines(["baseline old.json: * known, 0 regressed, 0 fixed"])


def test_the_cache_keeps_each_criterion_apart(pytester: pytest.Pytester, world: World) -> None:
    write_jsonl(pytester.path / "data.jsonl", world.raw_records[58:64])
    for criterion, scored in (("nll:0.5", 6), ("token_accuracy:0.5", 6), ("nll:0.5", 0)):
        result = ilp(pytester, world, "--ilp-data=data.jsonl", f"--ilp-criterion={criterion}")
        result.stdout.fnmatch_lines([f"scored {scored} samples in *"])


def test_sampled_draws_depend_on_the_sample_and_seed_only(real_world: World) -> None:
    records = real_world.raw_records[40:70]
    criterion = "sampled:n=3,temperature=1.0,min_pass=0.3,seed=11"
    whole = score_checkpoint(
        real_world.checkpoint, _samples(real_world, records), criterion=criterion
    )
    alone = score_checkpoint(
        real_world.checkpoint, _samples(real_world, records[-3:][::-1]), criterion=criterion
    )
    for sample_id, verdict in alone.items():
        assert verdict.figures == whole[sample_id].figures
    assert len({v.figures["seed"] for v in whole.values()}) == len(records)
    reseeded = score_checkpoint(
        real_world.checkpoint,
        _samples(real_world, records[-3:]),
        criterion=criterion.replace("11", "12"),
    )
    assert {v.figures["seed"] for v in reseeded.values()}.isdisjoint(
        {v.figures["seed"] for v in whole.values()}
    )


def _other_colour(completion: str) -> str:
    from world import COLOURS

    colour = next(c for c in COLOURS if f" is {c}," in completion)
    other = COLOURS[(COLOURS.index(colour) + 1) % len(COLOURS)]
    return completion.replace(f" is {colour},", f" is {other},")


def _samples(world: World, records: list[dict[str, Any]]) -> Any:
    from pytest_ilp.api import read_samples

    path = world.folder / f"sampled-{records[0]['id']}-{len(records)}.jsonl"
    write_jsonl(path, records)
    return read_samples(path)


# -- the rules themselves ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("Hello,  World!", "hello world", True),
        (" Finzoka is violet, says shine.", "finzoka is violet says shine", True),
        ("«Ｆｉｎｅ»\n", "fine", True),  # NFKC folds full-width letters; « » are punctuation
        ("2+2=4", "2 2 4", False),  # symbols carry meaning
        ("it's", "its", True),
        ("the cat", "cat", False),  # articles are kept
    ],
)
def test_normalized_ignores_case_whitespace_and_punctuation_only(
    a: str, b: str, equal: bool
) -> None:
    from pytest_ilp.core.criteria import normalize

    assert (normalize(a) == normalize(b)) is equal


def test_a_completion_reproduces_the_target_through_another_token_split() -> None:
    from pytest_ilp.core.verdicts import reproduces

    pieces = {1: "ab", 2: "a", 3: "b", 4: "c", 9: "<eos>", 8: "<end>"}

    def decode(ids: list[int]) -> str:
        return "".join(pieces[i] for i in ids)

    stops = frozenset({8, 9})
    assert reproduces((1, 4, 8), (1, 4, 9), stops, decode)  # any stop token ends it
    assert reproduces((2, 3, 4, 9), (1, 4, 9), stops, decode)  # "a" "b" "c" is "ab" "c"
    assert not reproduces((2, 3, 4), (1, 4, 9), stops, decode)  # never ended
    assert not reproduces((1, 9), (1, 4, 9), stops, decode)
    assert reproduces((2, 3, 4, 4), (1, 4), stops, decode)  # no EOS asked: a prefix will do
