"""ILPCallback: real training of the tiny model with transformers' Trainer and TRL's SFTTrainer,
checked against real pytest-ilp runs on checkpoints the trainer saved at the same points."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.signals import CheckpointVerdict
from pytest_ilp.core.train_log import parse_train_log, trajectory_history
from pytest_ilp.testing import tiny

from conftest import assert_round_trip, write_jsonl
from world import facts

#: optimizer steps between check points (and checkpoint saves): 20 samples in batches of 4 are
#: 5 steps an epoch, so 12 epochs give points at steps 30 and 60.
EVERY = 30


@dataclass(frozen=True)
class Run:
    """A finished training run: its folder, its callback and the trainer's log history."""

    folder: Path
    callback: Any
    log_history: list[dict[str, Any]]

    def checkpoint(self, step: int) -> Path:
        return self.folder / f"checkpoint-{step}"

    @property
    def trajectory(self) -> list[dict[str, Any]]:
        lines = (self.folder / "ilp-trajectory.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def colour_records(n: int, seed: int) -> list[dict[str, Any]]:
    return [
        {"prompt": f"Q: What colour is {name}? A:", "completion": f" {colour}."}
        for name, colour, _ in facts(n, seed=seed)
    ]


def train_arguments(folder: Path, epochs: int, **extra: Any) -> dict[str, Any]:
    return {
        "output_dir": str(folder),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": 4,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "save_strategy": "steps",
        "save_steps": EVERY,
        "save_only_model": True,
        "logging_strategy": "epoch",
        "report_to": [],
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
        **extra,
    }


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run, Run]:
    """Sequential fine-tuning with the plain Trainer: stage 1 trains 20 samples, stage 2 trains
    20 others and not those, so stage 1's are learned and then forgotten."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from pytest_ilp.integrations.transformers import ILPCallback

    folder = tmp_path_factory.mktemp("two_stages")
    records = [
        {"id": f"s{i:02d}", **r, "stage": "stage1" if i < 20 else "stage2"}
        for i, r in enumerate(colour_records(40, seed=3))
    ]
    data = write_jsonl(folder / "data.jsonl", records)
    tokenizer = tiny.train_tokenizer([r["prompt"] + r["completion"] for r in records], 300)
    model = tiny.build_llama(tokenizer, seed=0)

    def encoded(stage: str) -> list[dict[str, list[int]]]:
        # Completion-only SFT of prompt + completion + EOS, as TRL renders prompt/completion.
        rows = []
        for r in (r for r in records if r["stage"] == stage):
            prompt = tokenizer(r["prompt"])["input_ids"]
            full = tokenizer(r["prompt"] + r["completion"] + tokenizer.eos_token)["input_ids"]
            rows.append(
                {
                    "input_ids": full,
                    "attention_mask": [1] * len(full),
                    "labels": [-100] * len(prompt) + full[len(prompt) :],
                }
            )
        return rows

    runs = []
    for stage in ("stage1", "stage2"):
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**train_arguments(folder / stage, epochs=12)),
            train_dataset=encoded(stage),
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
            processing_class=tokenizer,
        )
        previous = folder / "stage1" / "ilp-trajectory.jsonl" if stage == "stage2" else None
        callback = ILPCallback(
            data=data, every=EVERY, trainer=trainer, stage=stage, continues=previous
        )
        trainer.add_callback(callback)
        trainer.train()
        runs.append(Run(folder / stage, callback, trainer.state.log_history))
    return data, runs[0], runs[1]


def plugin_report(
    pytester: pytest.Pytester, checkpoint: Path, data: Path, *args: str
) -> dict[str, Any]:
    name = f"report-{checkpoint.parent.name}-{checkpoint.name}.json"
    pytester.runpytest(
        f"--ilp-checkpoint={checkpoint}", f"--ilp-data={data}", f"--ilp-report={name}", *args
    )
    document: dict[str, Any] = json.loads((pytester.path / name).read_text())
    return document


def assert_points_match_the_plugin(
    pytester: pytest.Pytester, run: Run, data: Path, stage: str | None = None
) -> int:
    """Every point's verdicts, NLL and margin, sample by sample, and the learned share logged
    at it, equal what pytest-ilp says of the checkpoint saved at that step (every checkpoint
    the run saved is compared; it may have more points)."""
    points = [r for r in run.trajectory if r["stage"] == stage]
    logged = {h["step"]: h["ilp/learned"] for h in run.log_history if "ilp/learned" in h}
    assert sorted(logged) == sorted({r["step"] for r in points})
    steps = sorted(int(p.name.split("-")[1]) for p in run.folder.glob("checkpoint-*"))
    assert steps and set(steps) <= logged.keys()
    for step in steps:
        report = plugin_report(pytester, run.checkpoint(step), data)
        plugin = {s["id"]: s for s in report["samples"]}
        ours = {r["id"]: r for r in points if r["step"] == step}
        assert ours.keys() == plugin.keys()
        for sample_id, record in ours.items():
            expected = plugin[sample_id]
            assert record["learned"] == expected["learned"], (step, sample_id)
            assert record["nll"] == pytest.approx(expected["nll"], abs=1e-5)
            assert record["margin"] == pytest.approx(expected["margin"], abs=1e-4)
        assert logged[step] == pytest.approx(report["summary"]["learned_share"])
    return len(steps)


def test_per_point_verdicts_equal_the_plugins_on_checkpoints_saved_at_the_same_points(
    pytester: pytest.Pytester, two_stages: tuple[Path, Run, Run]
) -> None:
    data, stage1, stage2 = two_stages
    assert assert_points_match_the_plugin(pytester, stage1, data, "stage1") == 2
    assert assert_points_match_the_plugin(pytester, stage2, data, "stage2") == 2
    # Learning happened, and so did forgetting: the figures are not all alike.
    shares = [h["ilp/learned/stage/stage1"] for h in stage2.callback.history]
    assert stage1.callback.history[-1]["ilp/learned/stage/stage1"] > shares[-1]


def test_the_trajectory_logs_changes_between_points_across_stages(
    two_stages: tuple[Path, Run, Run],
) -> None:
    _, stage1, stage2 = two_stages
    records = stage2.trajectory
    assert [r["point"] for r in records[::40]] == [1, 2, 3, 4]  # stage 1's copied first
    by_point: dict[int, dict[str, bool]] = {}
    for r in records:
        by_point.setdefault(r["point"], {})[r["id"]] = r["learned"]
    for point, figures in zip((2, 3, 4), [*stage1.callback.history[1:], *stage2.callback.history]):
        before, now = by_point[point - 1], by_point[point]
        assert figures["ilp/newly_learned"] == sum(now[i] and not before[i] for i in now)
        assert figures["ilp/newly_forgotten"] == sum(before[i] and not now[i] for i in now)
    assert "ilp/newly_learned" not in stage1.callback.history[0]


def test_the_trajectory_alone_tells_forgetting_as_saved_history_checkpoints_do(
    pytester: pytest.Pytester, two_stages: tuple[Path, Run, Run]
) -> None:
    data, stage1, stage2 = two_stages
    final = stage2.checkpoint(2 * EVERY)
    trajectory = plugin_report(
        pytester, final, data, f"--ilp-train-log={stage2.folder / 'ilp-trajectory.jsonl'}"
    )
    (pytester.path / "ilp.yaml").write_text(
        f"history:\n  stage1: {stage1.checkpoint(2 * EVERY)}\n  stage2: {final}\n"
    )
    history = plugin_report(pytester, final, data)

    def forgotten(report: dict[str, Any]) -> set[str]:
        return {s["id"] for s in report["samples"] if s["cause"] == "forgetting"}

    assert len(forgotten(history)) >= 5
    assert forgotten(trajectory) == forgotten(history)
    sample = next(s for s in trajectory["samples"] if s["cause"] == "forgetting")
    assert "learned at stage1 step" in sample["evidence"]
    assert sample["signals"]["training"]["forgetting_events"] >= 1
    # The callback's own end-of-training report says the same.
    own = json.loads((stage2.folder / "ilp-report.json").read_text())
    assert forgotten(own) == forgotten(history)
    assert_round_trip(stage2.folder / "ilp-report.json")


@pytest.mark.parametrize("max_steps", [2 * EVERY, 3 * EVERY], ids=["to_the_end", "stopped_early"])
def test_the_final_report_is_what_check_writes_for_the_saved_model_subset_and_trajectory(
    tmp_path: Path, two_stages: tuple[Path, Run, Run], max_steps: int
) -> None:
    """Stage 2 again, on the checkpoints its trainer saved (each as the model in memory at its
    step), watched by a callback that checks a subset: its report equals `pytest_ilp.check` of
    the step-60 checkpoint with that subset as the scope and its trajectory as the training log.
    Stopped early, the last point had no generation: the report scores the model again."""
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )

    import pytest_ilp
    from pytest_ilp.integrations.transformers import ILPCallback

    data, stage1, stage2 = two_stages
    records = [json.loads(line) for line in data.read_text().splitlines()]

    def callback_on(partner: dict[str, Any]) -> Any:
        # A record that cannot be checked, and an untrained twin of `partner` with another
        # target: the data-level signals look at the whole data, not the subset alone.
        twin = {**partner, "id": "twin", "completion": " purple."}
        extended = write_jsonl(tmp_path / "data.jsonl", [*records, {"id": "bad"}, twin])
        with pytest.warns(UserWarning, match=r"1 sample\(s\) cannot be checked"):
            return ILPCallback(
                data=extended,
                every=EVERY,
                sample=12,
                seed=9,  # draws the twin, the data's last sample
                stage="stage2",
                continues=stage1.folder / "ilp-trajectory.jsonl",
                output_dir=tmp_path / "out",
            )

    subset = [s.id for s in callback_on(records[0]).samples]
    assert "twin" in subset
    partner = next(r for r in records if r["id"] not in subset)
    callback = callback_on(partner)
    assert [s.id for s in callback.samples] == subset  # the draw depends on the count alone

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    final = stage2.checkpoint(2 * EVERY)
    tokenizer = AutoTokenizer.from_pretrained(final)
    with pytest.warns(UserWarning, match="ILPCallback has no trainer"):
        for step in (EVERY, 2 * EVERY):
            state = TrainerState(global_step=step, max_steps=max_steps, epoch=step / 5)
            model = AutoModelForCausalLM.from_pretrained(stage2.checkpoint(step)).train()
            events = {"model": model, "processing_class": tokenizer}
            callback.on_step_end(args, state, TrainerControl(), **events)
        callback.on_train_end(args, state, TrainerControl(), **events)
    assert (callback.final is None) is (max_steps > 2 * EVERY)

    written = tmp_path / "out" / "ilp-report.json"
    own = json.loads(written.read_text())
    run = pytest_ilp.check(
        final,
        tmp_path / "data.jsonl",
        scope=[*subset, "bad"],
        train_log=tmp_path / "out" / "ilp-trajectory.jsonl",
        gate=False,
    )
    expected = run.report.to_dict()
    assert own.pop("checkpoint") == str(tmp_path / "out") != expected.pop("checkpoint")
    assert own == expected
    assert [s["id"] for s in own["samples"]] == [*subset, "bad"]
    by_id = {s["id"]: s for s in own["samples"]}
    assert by_id["bad"]["error"] and "gate" not in own
    assert partner["id"] in {s["id"] for s in by_id["twin"]["signals"]["dataset"]["siblings"]}
    causes = {s["cause"] for s in own["samples"]}
    assert {"forgetting", "data_inconsistency"} <= causes  # the trajectory and the whole data
    assert_round_trip(written)


def test_check_of_the_model_in_memory_equals_check_of_its_saved_checkpoint(
    two_stages: tuple[Path, Run, Run],
) -> None:
    """`check(model=..., tokenizer=...)`, base model included (its samples are rendered with
    the tokenizer given: a model in memory has no folder to read one from), gives the report
    `check` gives the checkpoint saved from it; the model is back in training mode after."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import pytest_ilp

    data, stage1, stage2 = two_stages
    final, base = stage2.checkpoint(2 * EVERY), stage1.checkpoint(2 * EVERY)
    model = AutoModelForCausalLM.from_pretrained(final).train()
    thresholds = {"forgetting": 0.5}
    saved = pytest_ilp.check(final, data, base=base, thresholds=thresholds)
    live = pytest_ilp.check(
        data=data,
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(final),
        base=base,
        thresholds=thresholds,
    )
    assert model.training
    document, expected = live.report.to_dict(), saved.report.to_dict()
    assert document.pop("checkpoint") == "in-memory" != expected.pop("checkpoint")
    assert document == expected
    assert live.verdict_line == saved.verdict_line
    assert any(live.signals[i].base is not None for i in live.unlearned)


@pytest.mark.parametrize("conversational", [False, True], ids=["prompt_completion", "chat"])
def test_sft_trainer_points_equal_the_plugins_and_its_tokens_are_ours(
    pytester: pytest.Pytester, tmp_path: Path, conversational: bool
) -> None:
    pytest.importorskip("trl", reason="TRL is the optional extra pytest-ilp[trl]")
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from pytest_ilp.core.render import RenderSettings, render_samples
    from pytest_ilp.integrations.transformers import ILPCallback

    records = colour_records(20, seed=5)
    tokenizer = tiny.train_tokenizer([r["prompt"] + r["completion"] for r in records], 300)
    if conversational:
        records = [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["completion"].strip()}],
            }
            for r in records
        ]
    dataset = Dataset.from_list(records)
    data = write_jsonl(tmp_path / "data.jsonl", records)
    config = SFTConfig(
        **{**train_arguments(tmp_path / "out", epochs=12), "save_only_model": conversational},
        bf16=False,
    )
    trainer = SFTTrainer(
        model=tiny.build_llama(tokenizer, seed=1),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    callback = ILPCallback(data=dataset, every="epoch" if conversational else EVERY)
    trainer.add_callback(callback)
    with pytest.warns(UserWarning, match="ILPCallback has no trainer"):
        trainer.train()

    # What the model trained on is what pytest-ilp checks: TRL's token ids start with ours
    # (a chat template's newline after the end-of-turn token is trained on, never generated).
    rendered = render_samples(
        callback.samples, tokenizer, RenderSettings(), frozenset({tokenizer.eos_token_id}), 256
    )
    for ours, theirs in zip(rendered, trainer.train_dataset["input_ids"]):
        assert not isinstance(ours, str)
        assert tuple(theirs[: len(ours.input_ids)]) == ours.input_ids
        assert conversational or len(theirs) == len(ours.input_ids)

    run = Run(tmp_path / "out", callback, trainer.state.log_history)
    assert assert_points_match_the_plugin(pytester, run, data) == 2
    assert (run.folder / "ilp-report.json").is_file()
    if conversational:
        return
    # Resuming from the step-30 checkpoint keeps the trajectory's points up to it.
    before = {r["point"]: r["step"] for r in run.trajectory}
    resumed = SFTTrainer(
        model=tiny.build_llama(tokenizer, seed=1),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    resumed.add_callback(ILPCallback(trainer=resumed, data=dataset, every=EVERY))
    resumed.train(resume_from_checkpoint=str(run.checkpoint(EVERY)))
    after = {r["point"]: r["step"] for r in run.trajectory}
    assert before == after == {1: EVERY, 2: 2 * EVERY}


# -- pure parts ----------------------------------------------------------------------------------


def trajectory_lines(rows: Sequence[tuple[int, int, str | None, bool, float]]) -> list[str]:
    return [
        json.dumps(
            {"id": "a", "point": point, "step": step, "stage": stage, "learned": learned, "nll": n}
        )
        for point, step, stage, learned, n in rows
    ]


def test_a_trajectory_is_read_in_point_order_even_when_steps_restart() -> None:
    log = parse_train_log(
        trajectory_lines(
            [
                (3, 10, "stage2", False, 2.0),
                (1, 10, "stage1", False, 3.0),
                (2, 20, "stage1", True, 1.0),
            ]
        ),
        "t.jsonl",
    )
    points = log["a"]
    assert [p.label for p in points] == ["stage1 step 10", "stage1 step 20", "stage2 step 10"]
    assert [p.learned for p in points] == [False, True, False]
    assert [p.loss for p in points] == [3.0, 1.0, 2.0]  # the NLL stands for the loss


def test_forgetting_from_a_trajectory_counts_only_samples_of_an_earlier_stage() -> None:
    points = parse_train_log(
        trajectory_lines([(1, 10, "stage1", True, 0.5), (2, 10, "stage2", True, 0.4)]), "t"
    )["a"]
    final = CheckpointVerdict("final", False, 2.0, -1.0)
    earlier = trajectory_history(points, final, "stage1")
    assert earlier is not None and earlier.learned_earlier is not None
    assert earlier.learned_earlier.label == "stage1 step 10"
    # A sample of the final stage was never left behind by a later stage.
    own = trajectory_history(points, final, "stage2")
    assert own is not None and own.learned_earlier is None


def test_a_bad_trajectory_record_names_the_file_and_line() -> None:
    lines = [*trajectory_lines([(1, 10, None, True, 0.5)]), '{"id": "a", "step": 2, "learned": 1}']
    with pytest.raises(IlpDataError, match=r"t\.jsonl:2: expected a JSON record"):
        parse_train_log(lines, "t.jsonl")


def test_bad_callback_arguments_and_records_say_what_to_do(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from pytest_ilp.integrations.transformers import ILPCallback, choose_subset, load_data

    records = [{"prompt": "Q: a?", "completion": " b"}, {"prompt": "Q: c?"}]
    with pytest.raises(ValueError, match="give 'epoch' or a number of steps"):
        ILPCallback(data=records, every=0)
    with pytest.raises(TypeError, match="takes a path, records or samples"):
        ILPCallback(data=3)
    with pytest.warns(UserWarning, match=r"1 sample\(s\) cannot be checked.*<dataset>:2"):
        callback = ILPCallback(data=records)
    assert [s.prompt for s in callback.samples] == ["Q: a?"]
    with pytest.raises(IlpDataError, match="not a trajectory written by ILPCallback"):
        write_jsonl(tmp_path / "log.jsonl", [{"id": "a", "epoch": 1, "loss": 1.0}])
        ILPCallback(data=records[:1], continues=tmp_path / "log.jsonl")
    samples = load_data([{"prompt": f"Q: {i}?", "completion": f" {i}"} for i in range(50)])
    with pytest.raises(
        IlpDataError, match=r"sample id\(s\) given twice: .*; give each sample once"
    ):
        ILPCallback(data=[*samples[:3], samples[1]])
    subset = choose_subset(samples, 10, seed=0)
    assert subset == choose_subset(samples, 10, seed=0) != choose_subset(samples, 10, seed=1)
    assert len(subset) == 10 and math.isclose(len(choose_subset(samples, 99, 0)), 50)


def test_a_point_restores_training_mode_and_reports_samples_it_cannot_score(
    tmp_path: Path,
) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from pytest_ilp.integrations.transformers import ILPCallback

    records = colour_records(4, seed=7)
    tokenizer = tiny.train_tokenizer([r["prompt"] + r["completion"] for r in records], 300)
    model = tiny.build_llama(tokenizer, seed=0).train()
    too_long = {"prompt": "Q: " + "ka " * 300 + "? A:", "completion": " red."}
    callback = ILPCallback(data=[*records, too_long], output_dir=tmp_path)
    state = TrainerState(global_step=5, max_steps=10, epoch=1.0)
    with (
        pytest.warns(UserWarning, match="ILPCallback has no trainer"),
        pytest.warns(UserWarning, match=r"1 sample\(s\) cannot be scored.*context is 256"),
    ):
        callback.on_epoch_end(
            TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True),
            state,
            TrainerControl(),
            model=model,
            processing_class=tokenizer,
        )
    assert model.training
    assert callback.history[0]["ilp/invalid"] == 1
    assert len((tmp_path / "ilp-trajectory.jsonl").read_text().splitlines()) == 4
    assert state.log_history[-1]["step"] == 5  # no trainer: the figures still reach the state
