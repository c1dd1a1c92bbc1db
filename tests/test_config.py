"""Settings from the command line, ilp.yaml and the ini file, and which one wins."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pytest_ilp.config import option_table, options
from pytest_ilp.config.settings import OPTIONS, Settings
from pytest_ilp.session import STATE_KEY

from conftest import write_jsonl
from world import World

RECORD = {"id": "r", "prompt": "Q", "completion": " A"}

pytestmark = pytest.mark.fake_world


def settings_of(pytester: pytest.Pytester, *args: str) -> Settings:
    config = pytester.parseconfigure(*args)
    return config.stash[STATE_KEY].settings


def test_no_checkpoint_anywhere_means_inactive(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()
    assert STATE_KEY not in config.stash


def test_an_ilp_yaml_without_a_checkpoint_is_not_read_further(pytester: pytest.Pytester) -> None:
    """A project whose ilp.yaml leaves the checkpoint to the command line runs its ordinary
    tests untouched, even where the rest of that file would not pass the checks."""
    (pytester.path / "ilp.yaml").write_text("thresholds: {made_up_cause: 2.5}\nlanguage: en\n")
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    assert "ilp:" not in result.stdout.str()


def test_ilp_yaml_in_the_rootdir_is_found_and_paths_are_relative_to_it(
    pytester: pytest.Pytester, world: World
) -> None:
    (pytester.path / "conf").mkdir()
    write_jsonl(pytester.path / "conf" / "sft.jsonl", [RECORD])
    (pytester.path / "conf" / "ilp.yaml").write_text(
        f"checkpoint: {world.checkpoint}\ndata: [sft.jsonl]\nreport: out/r.json\n"
        "batch_tokens: 512\ncache: false\nfragile_margin: 0.5\n"
        "render: {mode: raw, append_eos: false}\n"
    )
    settings = settings_of(pytester, "--ilp-config=conf/ilp.yaml")
    assert settings.data == (pytester.path / "conf" / "sft.jsonl",)
    assert settings.report == pytester.path / "conf" / "out" / "r.json"
    assert settings.backend_options.batch_tokens == 512
    assert settings.use_cache is False and settings.fragile_margin == 0.5
    assert settings.render.mode == "raw" and settings.render.append_eos is False
    assert settings.config_file == pytester.path / "conf" / "ilp.yaml"


def test_ini_keys_configure_a_ci_run(pytester: pytest.Pytester, world: World) -> None:
    write_jsonl(pytester.path / "sft.jsonl", [RECORD])
    pytester.makeini(
        f"[pytest]\nilp_checkpoint = {world.checkpoint}\nilp_data = sft.jsonl\n"
        "ilp_report = r.json\nilp_batch_tokens = 2048\nilp_cache = false\nilp_dtype = float32\n"
    )
    settings = settings_of(pytester)
    assert settings.checkpoint == world.checkpoint
    assert settings.data == (pytester.path / "sft.jsonl",)
    assert settings.report == pytester.path / "r.json"
    assert settings.backend_options.batch_tokens == 2048
    assert settings.backend_options.dtype == "float32"
    assert settings.use_cache is False


@pytest.mark.parametrize("written", ["out/stage1,out/stage2", "out/stage1 out/stage2"])
def test_ini_history_is_split_on_commas_or_spaces_relative_to_the_ini_file(
    pytester: pytest.Pytester, world: World, written: str
) -> None:
    for stage in ("stage1", "stage2"):
        (pytester.path / "out").mkdir(exist_ok=True)
        (pytester.path / "out" / stage).symlink_to(world.checkpoint, target_is_directory=True)
    pytester.makeini(f"[pytest]\nilp_checkpoint = {world.checkpoint}\nilp_history = {written}\n")
    settings = settings_of(pytester)
    assert [stage.checkpoint for stage in settings.history] == [
        pytester.path / "out" / "stage1",
        pytester.path / "out" / "stage2",
    ]


def test_command_line_beats_ilp_yaml_beats_ini(pytester: pytest.Pytester, world: World) -> None:
    write_jsonl(pytester.path / "sft.jsonl", [RECORD])
    pytester.makeini(
        f"[pytest]\nilp_checkpoint = {world.checkpoint}\nilp_batch_tokens = 100\n"
        "ilp_fragile_margin = 0.3\nilp_generate_max_tokens = 9\n"
    )
    (pytester.path / "ilp.yaml").write_text("batch_tokens: 200\nfragile_margin: 0.4\n")
    settings = settings_of(pytester, "--ilp-batch-tokens=300")
    assert settings.backend_options.batch_tokens == 300  # command line
    assert settings.fragile_margin == 0.4  # ilp.yaml over ini
    assert settings.generate_max_tokens == 9  # ini over default


def test_backend_args_from_ilp_yaml_go_only_to_the_backend_they_were_written_for(
    pytester: pytest.Pytester, world: World
) -> None:
    (pytester.path / "ilp.yaml").write_text(
        f"checkpoint: {world.checkpoint}\nbackend: {{name: vllm, args: {{max_model_len: 512}}}}\n"
    )
    # vllm may not be installed here: only the resolved settings are checked.
    settings = settings_of(pytester, "--ilp-backend=hf")
    assert settings.backend == "hf" and dict(settings.backend_options.args) == {}
    (pytester.path / "ilp.yaml").write_text(
        f"checkpoint: {world.checkpoint}\nbackend: {{args: {{attn_implementation: eager}}}}\n"
    )
    unnamed = settings_of(pytester)
    assert dict(unnamed.backend_options.args) == {"attn_implementation": "eager"}


def test_command_line_paths_are_relative_to_the_invocation_folder(
    pytester: pytest.Pytester, world: World
) -> None:
    sub = pytester.mkdir("sub")
    write_jsonl(sub / "sft.jsonl", [RECORD])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(sub)
        settings = settings_of(
            pytester, f"--ilp-checkpoint={world.checkpoint}", "--ilp-data=sft.jsonl"
        )
    assert settings.data == (sub / "sft.jsonl",)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "render: {mode: chat, eos: true}",
            "render: unknown key(s) eos; known: add_special_tokens, append_eos, mode",
        ),
        ("render: {append_eos: maybe}", "render.append_eos must be true or false"),
        ("render: html", "render: 'html' is not one of auto, raw, chat"),
        ("must_learn: [safety]", "must_learn: expected a mapping like {tags: [[]safety], ids: *}"),
        ("must_learn: {labels: [x]}", "must_learn: unknown key(s) labels; known: ids, tags"),
        ("backend: gpu-magic", "backend: 'gpu-magic' is not one of hf*"),
        ("cache: perhaps", "cache: expected true or false, got 'perhaps'"),
        ("data: 5", "data: expected a path or a list of paths"),
        ("- a\n- b", "expected a mapping of settings at the top level"),
        ("checkpoint: [a", "not valid YAML"),
    ],
)
def test_bad_ilp_yaml_values_are_usage_errors(
    pytester: pytest.Pytester, world: World, yaml_text: str, message: str
) -> None:
    (pytester.path / "ilp.yaml").write_text(yaml_text + "\n")
    result = pytester.runpytest(f"--ilp-checkpoint={world.checkpoint}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: *{message}*"])


def test_a_missing_config_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--ilp-config=nope.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --ilp-config: */nope.yaml does not exist"])


def test_options_are_listed_in_one_group_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "pytest-ilp: test that a checkpoint learned its SFT data:",
            "*--ilp-checkpoint=DIR*",
            "*--ilp-data=PATH*",
        ]
    )
    for flag in (
        "--ilp-report",
        "--ilp-device",
        "--ilp-dtype",
        "--ilp-batch-tokens",
        "--ilp-no-cache",
        "--ilp-config",
        "--ilp-render",
    ):
        assert flag in result.stdout.str()
    for ini in ("ilp_checkpoint", "ilp_data", "ilp_report", "ilp_cache", "ilp_batch_tokens"):
        assert ini in result.stdout.str()


def test_the_option_table_is_what_settings_declares() -> None:
    """The entry module registers `option_table`'s literals, generated from `Settings`: they
    must be what it declares today."""
    written = options.TABLE.read_text(encoding="utf-8")
    stale = f"{options.TABLE.name} is out of date with Settings: run `{options.COMMAND}`"
    assert written == options.table_source(), stale
    assert list(option_table.FLAGS) == options.flag_arguments()
    assert list(option_table.INI) == options.ini_arguments()
    assert options.main(["--check"]) == 0


def test_a_changed_setting_makes_the_option_table_stale() -> None:
    changed = [replace(OPTIONS[0], help="another help"), *OPTIONS[1:]]
    assert options.table_source(changed) != options.TABLE.read_text(encoding="utf-8")


def test_markers_are_registered_with_their_signatures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.ilp: *",
            "@pytest.mark.must_learn: *",
            "@pytest.mark.ilp_dataset(*paths): *",
        ]
    )


def test_saved_dataset_folders_collect_as_one_node(
    pytester: pytest.Pytester, world: World, tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets", reason="the datasets package is not installed")
    datasets.Dataset.from_list(world.raw_records[:3]).save_to_disk(str(pytester.path / "saved"))
    datasets.Dataset.from_list(world.raw_records[3:5]).to_parquet(str(pytester.path / "p.parquet"))
    result = pytester.runpytest(
        f"--ilp-checkpoint={world.checkpoint}",
        "--ilp-data=saved",
        "--ilp-data=p.parquet",
        "--co",
        "-q",
    )
    result.stdout.fnmatch_lines([f"saved::{r['id']}" for r in world.raw_records[:3]])
    result.stdout.fnmatch_lines([f"p.parquet::{r['id']}" for r in world.raw_records[3:5]])


def test_the_readme_settings_table_lists_every_declared_setting_and_no_other() -> None:
    """Each setting `Settings` declares has its row (flag, ini key, ilp.yaml key), and each row
    names a declared setting: adding a field to `Settings` without documenting it fails here."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    lines = readme[readme.index("| flag | ini key | ilp.yaml |") :].splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2 : lines.index("")]]
    table = [(flag, ini, yaml_key) for flag, ini, yaml_key, *_ in rows]
    documented = set()
    for option in OPTIONS:
        if option.on_command_line:
            negative = option.kind == "bool" and option.default is True
            flag = f"--ilp-no-{option.key}" if negative else option.flag
            row = next((r for r in table if r[0].startswith(f"`{flag}")), None)
            assert row is not None, f"no README row for {flag}"
            assert row[1].startswith(f"`{option.ini}`") and row[2].startswith(f"`{option.yaml}`")
        else:
            row = next((r for r in table if r[2].startswith(f"`{option.yaml}")), None)
            assert row is not None and row[0] == "", f"no README row for ilp.yaml {option.yaml}"
        documented.add(row)
    assert set(table) - documented == {("`--ilp-config PATH`", "`ilp_config`", "")}
