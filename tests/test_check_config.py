"""`pytest_ilp.check(config=...)`: an ilp.yaml (or a mapping of its keys) read as a pytest run
reads it, keyword arguments winning over it; and `api.score_checkpoint` through the same
pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pytest_ilp
from pytest_ilp.__main__ import main
from pytest_ilp.api import read_samples, score_checkpoint
from pytest_ilp.core.errors import IlpUsageError, SampleProblem
from pytest_ilp.core.thresholds import Threshold

from conftest import write_jsonl
from world import World

pytestmark = pytest.mark.fake_world


def by_id(records: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {r["id"]: r for r in records}


def budgets(run: pytest_ilp.Run) -> dict[str, Threshold]:
    return dict(run.gate.scopes[0].scope.budgets)


def test_check_reads_an_ilp_yaml_as_the_pytest_run_it_configures(
    pytester: pytest.Pytester, world: World
) -> None:
    conf = pytester.mkdir("conf")
    write_jsonl(conf / "sft.jsonl", world.raw_records[:10])  # held out: not reproduced
    write_jsonl(conf / "easy.jsonl", world.raw_records[10:20])
    (conf / "ilp.yaml").write_text(
        f"checkpoint: {world.checkpoint}\ndata: [sft.jsonl, easy.jsonl]\n"
        "report: out/report.json\nthresholds: {total: 3, knowledge_conflict: 1}\n"
        "fragile_margin: 0.5\ncriteria: [{files: [easy.jsonl], criterion: 'prefix:2'}]\n",
        encoding="utf-8",
    )
    result = pytester.runpytest("--ilp-config=conf/ilp.yaml", "-p", "no:randomly")
    written = json.loads((conf / "out" / "report.json").read_text(encoding="utf-8"))

    run = pytest_ilp.check(config=conf / "ilp.yaml", root=pytester.path)

    report = json.loads(run.report.to_json())
    # pytest collects the files in its own order: compare the samples by id.
    assert by_id(report["samples"]) == by_id(written["samples"])
    assert report["gate"] == written["gate"]
    assert report["fragile_margin"] == 0.5
    criteria = {o.sample.id: o.verdict.criterion for o in run.outcomes if o.verdict}
    assert [criteria[r["id"]] for r in world.raw_records[:20]] == ["exact"] * 10 + ["prefix:2"] * 10
    assert len(run.unlearned) == 10
    assert run.passed is (result.ret == pytest.ExitCode.OK) is False


def test_keywords_win_over_the_config_and_thresholds_merge_by_name(
    pytester: pytest.Pytester, world: World
) -> None:
    write_jsonl(pytester.path / "two.jsonl", world.raw_records[:2])
    write_jsonl(pytester.path / "five.jsonl", world.raw_records[:5])
    config = pytester.path / "ilp.yaml"
    config.write_text(
        f"checkpoint: {pytester.path / 'nowhere'}\ndata: two.jsonl\n"
        "thresholds: {total: 0, knowledge_conflict: 2}\nstrict: true\n",
        encoding="utf-8",
    )
    run = pytest_ilp.check(
        world.checkpoint,
        pytester.path / "five.jsonl",
        config=config,
        thresholds={"total": "50%"},
        strict=False,
    )
    assert len(run.samples) == 5  # the keyword's data, not the file's
    assert budgets(run) == {"total": Threshold(0.5), "knowledge_conflict": Threshold(2)}
    assert run.gate.strict is False

    # A mapping of ilp.yaml's keys reads the same way; its paths start from the current folder.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(pytester.path)
        mapped = pytest_ilp.check(
            config={"checkpoint": str(world.checkpoint), "data": ["two.jsonl"], "strict": True},
            thresholds={"total": 1},
        )
    assert len(mapped.samples) == 2 and mapped.gate.strict is True
    assert budgets(mapped) == {"total": Threshold(1)}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("fragile_margin: wide\n", "{file}: fragile_margin: expected a number, got 'wide'"),
        ("batch_tokns: 4\n", "{file}: unknown setting(s) batch_tokns; known: checkpoint, data,"),
        ("thresholds: {total: 2.5}\n", "{file}: thresholds: total: a share must lie between 0"),
        ("thresholds: {knowledge_conflit: 1}\n", "{file}: thresholds: unknown cause(s)"),
        ("render: {mode: raw, eos: true}\n", "{file}: render: unknown key(s) eos"),
    ],
)
def test_config_errors_name_the_file_and_the_key(
    tmp_path: Path, world: World, yaml_text: str, message: str
) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", world.raw_records[:2])
    config = tmp_path / "ilp.yaml"
    config.write_text(f"checkpoint: {world.checkpoint}\n" + yaml_text, encoding="utf-8")
    with pytest.raises(IlpUsageError) as raised:
        pytest_ilp.check(data=data, config=config)
    assert str(raised.value).startswith(message.format(file=config))


def test_a_config_that_is_missing_or_names_no_checkpoint_is_refused(
    tmp_path: Path, world: World
) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", world.raw_records[:2])
    with pytest.raises(IlpUsageError, match=r"^config: .*/nope\.yaml does not exist$"):
        pytest_ilp.check(world.checkpoint, data, config=tmp_path / "nope.yaml")
    config = tmp_path / "ilp.yaml"
    config.write_text("data: sft.jsonl\n", encoding="utf-8")
    with pytest.raises(IlpUsageError, match=r"ilp\.yaml: sets no `checkpoint`"):
        pytest_ilp.check(config=config)
    with pytest.raises(IlpUsageError, match=r"config: device: 'tpu' is not one of|--ilp-device"):
        pytest_ilp.check(config={"checkpoint": str(world.checkpoint), "device": "tpu"})


def test_score_checkpoint_gives_the_verdicts_of_check(
    tmp_path: Path, world: World, truth: dict[str, bool]
) -> None:
    records = world.raw_records[:20]
    data = write_jsonl(tmp_path / "sft.jsonl", records)
    verdicts = score_checkpoint(world.checkpoint, read_samples(data), criterion="prefix:3")
    run = pytest_ilp.check(world.checkpoint, data, criterion="prefix:3")
    assert verdicts == run.verdicts
    assert {i for i, v in verdicts.items() if v.learned} >= {
        r["id"] for r in records if truth[r["id"]]
    }
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "empty", "prompt": "Q", "completion": ""}])
    with pytest.raises(
        SampleProblem, match=r"^sample empty: .*\(1 sample\(s\) cannot be checked\)"
    ):
        score_checkpoint(world.checkpoint, bad)


def test_the_command_line_check_reads_flags_over_ilp_yaml_and_writes_what_pytest_writes(
    pytester: pytest.Pytester, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(pytester.path / "sft.jsonl", world.raw_records[:12])
    (pytester.path / "ilp.yaml").write_text(
        f"checkpoint: {world.checkpoint}\ndata: sft.jsonl\nthresholds: {{total: 0}}\n",
        encoding="utf-8",
    )
    flags = ["--ilp-threshold=total=50%", "--ilp-report=cli.json", "--ilp-markdown=cli.md"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(pytester.path)
        status = main(["check", *flags])
    printed = capsys.readouterr().out
    result = pytester.runpytest(*flags[:1], "--ilp-report=pytest.json", "-p", "no:randomly")

    cli = json.loads((pytester.path / "cli.json").read_text(encoding="utf-8"))
    ran = json.loads((pytester.path / "pytest.json").read_text(encoding="utf-8"))
    assert by_id(cli["samples"]) == by_id(ran["samples"])
    assert cli["gate"] == ran["gate"] and cli["gate"]["passed"] is False  # 12 held out of 12
    assert status == result.ret == 1
    assert "ilp gate: FAILED" in printed and "written:  Markdown summary  cli.md" in printed
    assert (pytester.path / "cli.md").read_text(encoding="utf-8").startswith("#")


def test_the_command_line_check_refuses_bad_input_naming_where_it_was_written(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ilp.yaml").write_text(
        f"checkpoint: {world.checkpoint}\nfragile_margin: wide\n", encoding="utf-8"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main(["check", "--ilp-data=sft.jsonl"]) == 4
        assert main(["check", "--ilp-config=other.yaml"]) == 4
    errors = capsys.readouterr().err
    assert (
        f"error: {tmp_path / 'ilp.yaml'}: fragile_margin: expected a number, got 'wide'" in errors
    )
    assert f"error: --ilp-config: {tmp_path / 'other.yaml'} does not exist" in errors
