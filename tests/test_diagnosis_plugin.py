"""Diagnosis end to end: real pytest runs on the tiny world, with base, history and training-log
inputs, a conftest's own cause, and a base model whose tokenizer does not match."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.core.answers import FUNCTION_WORDS, is_answer_token, lower_words
from pytest_ilp.testing import tiny

from conftest import write_jsonl
from world import World


def ilp(pytester: pytest.Pytester, world: World, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--ilp-checkpoint={world.checkpoint}", *args)


def report_of(pytester: pytest.Pytester, name: str = "report.json") -> dict[str, dict[str, Any]]:
    report = json.loads((pytester.path / name).read_text())
    return {s["id"]: s for s in report["samples"]}


@pytest.fixture
def mixed(world: World, truth: dict[str, bool]) -> list[dict[str, Any]]:
    """Eight unlearned (held-out) and four learned raw records."""
    unlearned = [r for r in world.raw_records[:100] if not truth[r["id"]]][:8]
    learned = [r for r in world.raw_records[:100] if truth[r["id"]]][:4]
    assert len(unlearned) == 8 and len(learned) == 4
    return unlearned + learned


@pytest.fixture(scope="module")
def stage1(world: World, truth: dict[str, bool], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint that learned ten held-out facts the world's checkpoint does not reproduce:
    as history, those samples were learned earlier and lost."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(world.checkpoint, dtype=torch.float32)
    records = [r for r in world.raw_records[:50] if not truth[r["id"]]][:10]
    examples = []
    for record in records:
        prompt = tokenizer(record["prompt"])["input_ids"]
        full = tokenizer(record["prompt"] + record["completion"] + tokenizer.eos_token)
        examples.append((full["input_ids"], len(prompt)))
    tiny.train_causal_lm(
        model, examples, steps=60, lr=3e-3, batch_size=10, pad_token_id=tokenizer.pad_token_id
    )
    return tiny.save_checkpoint(model, tokenizer, tmp_path_factory.mktemp("stage1") / "stage1")


def test_without_inputs_each_unlearned_sample_says_what_would_decide(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", mixed)
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "--ilp-report=report.json")
    result.assert_outcomes(failed=8, passed=4)
    result.stdout.fnmatch_lines(
        [
            "  cause:     undiagnosed: no rule matched; needs --ilp-base to tell missing "
            "knowledge and knowledge conflicts; needs --ilp-history to tell forgetting",
            "  fix:       give the inputs the evidence names*",
        ]
    )
    samples = report_of(pytester)
    for sample in samples.values():
        if sample["learned"]:
            assert sample["cause"] is None and sample["signals"] is None
        else:
            assert sample["cause"] == "undiagnosed"
            assert sample["figures"] == {"needs": ["base", "history"]}
            assert sample["signals"]["base"] is None and sample["signals"]["history"] is None


def test_base_model_signals_decide_conflict_or_missing_knowledge(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    # The checkpoint as its own base: at the divergence the base's top token is the one the
    # fine-tuned model predicts, so its confidence there alone tells conflict from missing. The
    # tiny model is rarely sure of anything: a lower confidence bar gives both causes.
    write_jsonl(pytester.path / "data.jsonl", mixed)
    (pytester.path / "ilp.yaml").write_text("diagnosis:\n  conflict_confidence: 0.3\n")
    ilp(
        pytester,
        world,
        "--ilp-data=data.jsonl",
        f"--ilp-base={world.checkpoint}",
        "--ilp-report=report.json",
        "--junitxml=junit.xml",
    )
    causes = {}
    for sample_id, sample in report_of(pytester).items():
        if sample["learned"]:
            continue
        probe = sample["signals"]["base"]["probe"]
        familiarity = sample["signals"]["base"]["familiarity"]
        divergence = sample["first_divergence"]
        assert probe["position"] == divergence["position"]
        assert probe["top_prob"] == pytest.approx(divergence["predicted_prob"], rel=1e-4)
        # The base's own confident answer is a conflict when that answer is spelt like the
        # target's token, the base gives the target little and the prompt's subject is
        # familiar to it; a guess about an unfamiliar subject, or a template token, is not.
        base = sample["signals"]["base"]
        unfamiliar = familiarity is not None and (
            familiarity["surprisal"] >= 1.5 * familiarity["median"]
        )
        answer = not (probe["stopped"] and not probe["continuation"]) and is_answer_token(
            probe["top_token"], divergence["expected"], base["answers"]
        )
        if probe["top_prob"] >= 0.3 and answer and probe["target_prob"] < 0.1 and not unfamiliar:
            assert "knowledge_conflict" in sample["causes"], sample_id
        elif probe["target_prob"] < 0.1:
            # ...unless the base's own answer decides: the fine-tuned model's answer is in it,
            # or it names another answer (a conflict), or it names the target (no gap).
            said = (
                lower_words(probe["continuation"].split("\n")[0])
                if not divergence["position"]
                else set()
            )
            assert (
                "missing_knowledge" in sample["causes"]
                or sample["figures"].get("echoes_base")
                or sample["figures"].get("base_states")
                or (lower_words(sample["target"]) - FUNCTION_WORDS <= said)
            ), sample_id
        causes[sample_id] = sample["cause"]
        assert "history" in sample["signals"]["missing"]
    assert {"knowledge_conflict", "missing_knowledge"} <= set(causes.values())
    samples = report_of(pytester)
    weak = Counter(s["cause"] for s in samples.values() if s.get("confidence") == "weak")
    document = json.loads((pytester.path / "report.json").read_text())
    assert document["summary"]["weak_causes"] == dict(weak)
    junit = ET.parse(pytester.path / "junit.xml")
    for case in junit.iter("testcase"):
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert properties.get("ilp_cause") == causes.get(case.get("name"))
        if case.get("name") in causes:
            confidence = samples[case.get("name")]["confidence"]
            assert properties.get("ilp_confidence") == confidence


def test_forgetting_when_an_earlier_checkpoint_reproduced_the_sample(
    pytester: pytest.Pytester, world: World, truth: dict[str, bool], stage1: Path
) -> None:
    forgotten = [r for r in world.raw_records[:50] if not truth[r["id"]]][:10]
    write_jsonl(pytester.path / "data.jsonl", forgotten)
    result = ilp(
        pytester,
        world,
        "--ilp-data=data.jsonl",
        f"--ilp-history={stage1}",
        "--ilp-report=report.json",
    )
    samples = report_of(pytester)
    learned_at_stage1 = [
        s for s in samples.values() if s["signals"]["history"]["trajectory"][0]["learned"]
    ]
    assert len(learned_at_stage1) >= 5  # the extra training took
    for sample in learned_at_stage1:
        assert sample["cause"] == "forgetting"
        assert sample["evidence"].startswith("learned at stage1 (margin +")
        # Direct evidence, unless the final checkpoint nearly reproduces the sample.
        near_miss = sample["margin"] > -1.0
        assert sample["confidence"] == ("weak" if near_miss else "strong")
    result.stdout.fnmatch_lines(
        ["  cause:     forgetting (strong): learned at stage1*", "*forgetting*"]
    )
    # The history checkpoint scores the unlearned samples only, and the summary says its cost.
    unlearned = sum(1 for s in samples.values() if s["learned"] is False)
    result.stdout.fnmatch_lines(
        [
            "scored 10 samples in * s*; 0 from cache; "
            f"for diagnosis: stage1 {unlearned} in * s (0 cached)"
        ]
    )


def test_data_inconsistency_when_the_model_gives_a_duplicate_prompts_target(
    pytester: pytest.Pytester, world: World, truth: dict[str, bool]
) -> None:
    learned = next(r for r in world.raw_records[50:100] if truth[r["id"]])
    contradicting = {**learned, "id": "contradicts", "completion": " Nobody knows."}
    write_jsonl(pytester.path / "data.jsonl", [learned, contradicting])
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "--ilp-report=report.json")
    result.assert_outcomes(passed=1, failed=1)
    sample = report_of(pytester)["contradicts"]
    assert sample["cause"] == "data_inconsistency"
    assert sample["signals"]["dataset"]["produces_sibling"] == learned["id"]
    assert sample["signals"]["dataset"]["siblings"][0]["similarity"] == 1.0
    result.stdout.fnmatch_lines(
        [
            "  cause:     data_inconsistency (strong): 1 near-duplicate prompt(s) * e.g. "
            f"{learned['id']}"
            " (similarity 1.00), and the model produces*"
        ]
    )
    assert sample["signals"]["dataset"]["siblings"][0]["identical"] is True


def test_a_record_that_cannot_be_checked_contradicts_nothing(
    pytester: pytest.Pytester, world: World, truth: dict[str, bool]
) -> None:
    unlearned = next(r for r in world.raw_records[:50] if not truth[r["id"]])
    empty = {**unlearned, "id": "empty", "completion": ""}
    write_jsonl(pytester.path / "data.jsonl", [unlearned, empty])
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "--ilp-report=report.json")
    result.assert_outcomes(failed=1, errors=1)
    sample = report_of(pytester)[unlearned["id"]]
    assert sample["signals"]["dataset"]["siblings"] == []
    assert sample["cause"] == "undiagnosed"


def test_training_log_adds_cartography_and_falling_loss(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", mixed)
    write_jsonl(
        pytester.path / "train_log.jsonl",
        [{"id": r["id"], "epoch": e, "loss": 3.0 - e} for r in mixed for e in (1, 2)],
    )
    ilp(
        pytester,
        world,
        "--ilp-data=data.jsonl",
        "--ilp-train-log=train_log.jsonl",
        "--ilp-report=report.json",
    )
    for sample in report_of(pytester).values():
        if not sample["learned"]:
            training = sample["signals"]["training"]
            assert training["points"] == 2 and training["loss_trend"] == -1.0
            assert "under_optimization" in sample["causes"]


def test_a_malformed_training_log_names_the_file_and_line(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", mixed[:1])
    (pytester.path / "log.jsonl").write_text('{"id": "a", "epoch": 1, "loss": 1}\n{"id": "a"}\n')
    result = ilp(pytester, world, "--ilp-data=data.jsonl", "--ilp-train-log=log.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--ilp-train-log: *log.jsonl:2: expected a JSON record {id, step or epoch, loss}*"]
    )


CUSTOM_CAUSE = """
from pytest_ilp import Diagnosis

def pytest_ilp_diagnose(sample, verdict, signals):
    if sample.id in {IDS}:
        return Diagnosis(
            cause="colour_blind",
            evidence=f"mixed up a colour at token {{verdict.first_divergence.position + 1}}",
            suggestion="add colour drills",
        )
    return None
"""


def test_a_conftest_hook_reports_a_cause_of_its_own(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    own = {mixed[0]["id"], mixed[1]["id"]}
    pytester.makeconftest(CUSTOM_CAUSE.format(IDS=sorted(own)))
    write_jsonl(pytester.path / "data.jsonl", mixed)
    result = ilp(
        pytester, world, "--ilp-data=data.jsonl", "--ilp-report=report.json", "--junitxml=j.xml"
    )
    result.stdout.fnmatch_lines(
        [
            "  cause:     colour_blind: mixed up a colour at token *",
            "  fix:       add colour drills",
        ]
    )
    result.stdout.fnmatch_lines(["*undiagnosed*6*", "*colour_blind*2*"])
    samples = report_of(pytester)
    assert {i for i, s in samples.items() if s["cause"] == "colour_blind"} == own
    junit = ET.parse(pytester.path / "j.xml")
    cases = {case.get("name"): case for case in junit.iter("testcase")}
    for sample_id in own:
        properties = {p.get("name"): p.get("value") for p in cases[sample_id].iter("property")}
        assert properties["ilp_cause"] == "colour_blind"
        assert properties["ilp_suggestion"] == "add colour drills"


@pytest.mark.parametrize(
    ("conftest", "message"),
    [
        (
            "def pytest_ilp_diagnose(sample, verdict, signals):\n    return 'colour_blind'\n",
            "ERROR: a pytest_ilp_diagnose hook returned 'colour_blind' for sample *: return "
            "pytest_ilp.Diagnosis(cause=..., evidence=..., suggestion=...), or None*",
        ),
        (
            "def pytest_ilp_causes():\n    return 'colour_blind'\n",
            "ERROR: a pytest_ilp_causes hook returned 'colour_blind': return a list of cause "
            "names*",
        ),
    ],
)
def test_a_hook_returning_the_wrong_type_is_a_usage_error(
    pytester: pytest.Pytester,
    world: World,
    mixed: list[dict[str, Any]],
    conftest: str,
    message: str,
) -> None:
    pytester.makeconftest(conftest)
    write_jsonl(pytester.path / "data.jsonl", mixed)
    result = ilp(pytester, world, "--ilp-data=data.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_base_model_with_another_tokenizer_is_skipped_with_a_warning(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    other = tiny.train_tokenizer(["a completely different corpus of words"] * 20, vocab_size=300)
    base = tiny.save_checkpoint(tiny.build_llama(other), other, pytester.path / "other-base")
    write_jsonl(pytester.path / "data.jsonl", mixed)
    result = ilp(
        pytester, world, "--ilp-data=data.jsonl", f"--ilp-base={base}", "--ilp-report=report.json"
    )
    result.stdout.fnmatch_lines(
        ["*IlpWarning: base signals skipped: *other-base has another tokenizer than*"]
    )
    for sample in report_of(pytester).values():
        if not sample["learned"]:
            assert sample["cause"] == "undiagnosed"
            assert "base signals skipped" in sample["evidence"]
    assert "Traceback" not in result.stdout.str()


def test_a_base_model_without_embeddings_for_some_tokens_says_so_per_sample(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    """Same tokenizer, smaller vocabulary: samples using the tokens it lacks get no base
    signals, and their evidence says why instead of staying silent."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world.checkpoint)
    model = tiny.build_llama(tokenizer)
    model.resize_token_embeddings(len(tokenizer) // 2)
    base = tiny.save_checkpoint(model, tokenizer, pytester.path / "small-base")
    write_jsonl(pytester.path / "data.jsonl", mixed)
    ilp(pytester, world, "--ilp-data=data.jsonl", f"--ilp-base={base}", "--ilp-report=r.json")
    unlearned = [s for s in report_of(pytester, "r.json").values() if s["learned"] is False]
    skipped = [s for s in unlearned if s["signals"]["base"] is None]
    assert skipped, "no sample used a token beyond the base's vocabulary: the test means nothing"
    for sample in skipped:
        assert "base signals skipped: uses token id" in sample["evidence"], sample["id"]
        assert "which small-base has no embedding for" in sample["evidence"], sample["id"]


def test_diagnosis_thresholds_come_from_ilp_yaml(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", mixed)
    args = ("--ilp-data=data.jsonl", f"--ilp-base={world.checkpoint}", "--ilp-report=report.json")
    (pytester.path / "ilp.yaml").write_text("diagnosis:\n  conflict_confidence: 0.3\n")
    ilp(pytester, world, *args)
    before = {i: s["cause"] for i, s in report_of(pytester).items() if not s["learned"]}
    # No base confidence reaches 1.01: no knowledge conflict is possible any more (neither a
    # confident base nor a fairly sure one that the fine-tuned model follows).
    (pytester.path / "ilp.yaml").write_text(
        "diagnosis:\n  conflict_confidence: 1.01\n  answer_confidence: 1.01\n"
    )
    ilp(pytester, world, *args)
    after = {i: s["cause"] for i, s in report_of(pytester).items() if not s["learned"]}
    assert "knowledge_conflict" in before.values()
    assert "knowledge_conflict" not in after.values()
    changed = [i for i in before if before[i] != after[i]]
    assert changed and all(before[i] == "knowledge_conflict" for i in changed)


def test_an_unknown_diagnosis_threshold_lists_the_known_ones(
    pytester: pytest.Pytester, world: World, mixed: list[dict[str, Any]]
) -> None:
    write_jsonl(pytester.path / "data.jsonl", mixed[:1])
    (pytester.path / "ilp.yaml").write_text("diagnosis:\n  conflict_confidance: 0.4\n")
    result = ilp(pytester, world, "--ilp-data=data.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ilp.yaml: diagnosis: unknown key(s) conflict_confidance; known: *conflict_confidence*"]
    )


def test_history_copy_of_the_checkpoint_names_the_final_stage(
    pytester: pytest.Pytester, world: World, stage1: Path, truth: dict[str, bool]
) -> None:
    forgotten = [r for r in world.raw_records[:50] if not truth[r["id"]]][:4]
    write_jsonl(
        pytester.path / "data.jsonl",
        [{**r, "stage": "one"} for r in forgotten[:2]]
        + [{**r, "stage": "two"} for r in forgotten[2:]],
    )
    final = shutil.copytree(world.checkpoint, pytester.path / "final")
    (pytester.path / "ilp.yaml").write_text(
        f"checkpoint: final\nhistory:\n  one: {stage1}\n  two: final\n"
    )
    result = pytester.runpytest("--ilp-data=data.jsonl", "--ilp-report=report.json")
    assert final.is_dir()
    result.stdout.fnmatch_lines(
        ["ilp: scoring 4 samples * on final *", "ilp: scoring 4 * on stage1 *"]
    )
    assert result.stdout.str().count("ilp: scoring") == 2  # the final stage is not scored twice
    samples = report_of(pytester)
    for record in forgotten:
        sample = samples[record["id"]]
        labels = [c["label"] for c in sample["signals"]["history"]["trajectory"]]
        assert labels == ["one", "two"]
        learned_at_one = sample["signals"]["history"]["trajectory"][0]["learned"]
        # Only samples of the earlier stage can be forgotten.
        assert (sample["cause"] == "forgetting") == (record in forgotten[:2] and learned_at_one)
