"""Bad input gets a clear message naming the file and line or the sample, never a traceback
from deep inside torch, and never a silently dropped sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import write_jsonl
from world import World

pytestmark = pytest.mark.fake_world

GOOD = {"id": "good", "prompt": "Q: What colour is Zorp? A:", "completion": " Zorp is red."}


def ilp(pytester: pytest.Pytester, world: World, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--ilp-checkpoint={world.checkpoint}", *args)


def assert_no_traceback(result: pytest.RunResult) -> None:
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "site-packages" not in output


def test_malformed_line_fails_collection_naming_file_and_line(
    pytester: pytest.Pytester, world: World
) -> None:
    path = pytester.path / "data.jsonl"
    path.write_text('{"prompt": "Q", "completion": "A"}\n{"prompt": oops}\n')
    result = ilp(pytester, world, "--ilp-data=data.jsonl")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*data.jsonl:2: not valid JSON (Expecting value, column 12)*"])
    assert_no_traceback(result)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "fmt", "text": "plain"}, "no known record format in fields"),
        ({"id": "empty", "prompt": "Q", "completion": ""}, "the target is empty"),
        ({"id": "missing", "prompt": "Q"}, "has a `prompt` but no `completion`"),
    ],
)
def test_a_record_that_cannot_be_checked_errors_on_its_own(
    pytester: pytest.Pytester, world: World, record: dict[str, str], message: str
) -> None:
    write_jsonl(pytester.path / "data.jsonl", [GOOD, record])
    result = ilp(pytester, world, "--ilp-data=data.jsonl")
    result.assert_outcomes(errors=1, failed=1)  # "good" is unlearned by the tiny model
    result.stdout.fnmatch_lines(
        [f"sample {record['id']} (data.jsonl:2) cannot be checked: *{message}*"]
    )
    result.stdout.fnmatch_lines(["*invalid samples (see their errors): " + record["id"]])
    assert_no_traceback(result)


def test_duplicate_ids_fail_collection_naming_both_lines(
    pytester: pytest.Pytester, world: World
) -> None:
    write_jsonl(pytester.path / "data.jsonl", [GOOD, {**GOOD, "completion": " other"}])
    result = ilp(pytester, world, "--ilp-data=data.jsonl")
    result.stdout.fnmatch_lines(
        ["*data.jsonl:2: duplicate sample id 'good' (also at *data.jsonl:1)*"]
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_duplicate_ids_across_files_are_refused(pytester: pytest.Pytester, world: World) -> None:
    write_jsonl(pytester.path / "a.jsonl", [GOOD])
    write_jsonl(pytester.path / "b.jsonl", [GOOD])
    result = ilp(pytester, world, "--ilp-data=a.jsonl", "--ilp-data=b.jsonl")
    result.stdout.fnmatch_lines(["*b.jsonl:1: duplicate sample id 'good' (also at *a.jsonl:1)*"])


def test_prompt_longer_than_the_context_errors_with_the_lengths(
    pytester: pytest.Pytester, world: World
) -> None:
    long = {"id": "long", "prompt": "Q: What colour is Zorp? " * 60 + "A:", "completion": " red"}
    write_jsonl(pytester.path / "data.jsonl", [long])
    result = ilp(pytester, world, "--ilp-data=data.jsonl")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "sample long (data.jsonl:1) cannot be checked: prompt + target is * tokens (* prompt + "
            "* target) but the model's context is 256 tokens; shorten the sample or leave it out*"
        ]
    )
    assert_no_traceback(result)


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        (
            "nowhere",
            "--ilp-checkpoint: */nowhere does not exist; point it at a folder written by"
            " save_pretrained",
        ),
        ("empty", "--ilp-checkpoint: */empty holds no config.json; point it at a folder*"),
        ("afile", "--ilp-checkpoint: */afile is a file; point it at the folder*"),
    ],
)
def test_a_missing_checkpoint_is_a_usage_error(
    pytester: pytest.Pytester, checkpoint: str, message: str
) -> None:
    (pytester.path / "empty").mkdir()
    (pytester.path / "afile").write_text("x")
    write_jsonl(pytester.path / "data.jsonl", [GOOD])
    result = pytester.runpytest(f"--ilp-checkpoint={checkpoint}", "--ilp-data=data.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_a_checkpoint_of_weights_without_loadable_model_is_a_usage_error(
    pytester: pytest.Pytester, real_world: World
) -> None:
    broken = shutil.copytree(real_world.checkpoint, pytester.path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    write_jsonl(pytester.path / "data.jsonl", [GOOD])
    result = pytester.runpytest("--ilp-checkpoint=broken", "--ilp-data=data.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: transformers could not load a causal language model from */broken: *"]
    )


def test_a_tokenizer_that_does_not_match_the_weights_is_a_usage_error(
    pytester: pytest.Pytester, real_world: World
) -> None:
    mixed = shutil.copytree(real_world.checkpoint, pytester.path / "mixed")
    tokenizer = AutoTokenizer.from_pretrained(mixed)
    # Tokens the model has no embeddings for, as in a tokenizer extended after training.
    tokenizer.add_tokens([f"newword{i}" for i in range(500)])
    tokenizer.save_pretrained(mixed)
    write_jsonl(pytester.path / "data.jsonl", [{**GOOD, "completion": " newword499"}])
    result = pytester.runpytest("--ilp-checkpoint=mixed", "--ilp-data=data.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: */mixed: the tokenizer produced token id * but the model's vocabulary has * "
            "entries: the tokenizer and the weights do not belong together*"
        ]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ilp-data=missing.jsonl",), "ERROR: --ilp-data: */missing.jsonl: no such file*"),
        (
            ("--ilp-data=data.jsonl", "--ilp-batch-tokens=0"),
            "ERROR: --ilp-batch-tokens: must be a positive integer, got 0",
        ),
        (
            ("--ilp-data=data.jsonl", "--ilp-batch-tokens=many"),
            "ERROR: --ilp-batch-tokens: expected an integer, got 'many'",
        ),
        (
            ("--ilp-data=data.jsonl", "--ilp-device=tpu"),
            "ERROR: --ilp-device: 'tpu' is not one of auto, cpu, cuda, cuda:N, mps",
        ),
        (
            ("--ilp-data=data.jsonl", "--ilp-fragile-margin=-1"),
            "ERROR: --ilp-fragile-margin: must not be negative, got -1.0",
        ),
    ],
)
def test_bad_option_values_are_usage_errors(
    pytester: pytest.Pytester, world: World, args: tuple[str, ...], message: str
) -> None:
    write_jsonl(pytester.path / "data.jsonl", [GOOD])
    result = ilp(pytester, world, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_bad_choice_lists_the_valid_ones(pytester: pytest.Pytester, world: World) -> None:
    result = ilp(pytester, world, "--ilp-dtype=float8")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--ilp-dtype: invalid choice: 'float8' (choose from 'auto', "
            "'float32', 'bfloat16', 'float16')*"
        ]
    )


def test_unknown_ilp_yaml_keys_are_listed(pytester: pytest.Pytester, world: World) -> None:
    (pytester.path / "ilp.yaml").write_text(f"checkpoint: {world.checkpoint}\nbatch_tokns: 9\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: */ilp.yaml: unknown setting(s) batch_tokns; known: *"])


def test_a_test_that_takes_ilp_sample_without_data_is_told_what_to_add(
    pytester: pytest.Pytester, world: World
) -> None:
    pytester.makepyfile("def test_sample(ilp_sample):\n    pass\n")
    result = ilp(pytester, world)
    result.stdout.fnmatch_lines(
        [
            "*test_sample takes ilp_sample but no data is given: add "
            "@pytest.mark.ilp_dataset('data.jsonl') or pass --ilp-data*"
        ]
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_file_outside_the_rootdir_still_collects(
    pytester: pytest.Pytester, world: World, tmp_path: Path
) -> None:
    outside = write_jsonl(tmp_path / "elsewhere.jsonl", [GOOD])
    pytester.mkdir("tests")
    pytester.makeini("[pytest]\ntestpaths = tests\n")
    result = ilp(pytester, world, f"--ilp-data={outside}", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["../*/elsewhere.jsonl::good"])
