"""`ILPCallback`: check the SFT data while a transformers `Trainer` or TRL `SFTTrainer` trains.

    trainer = SFTTrainer(model=model, args=SFTConfig(output_dir="out"), train_dataset=data,
                         processing_class=tokenizer)
    trainer.add_callback(ILPCallback(trainer=trainer, data="data/sft.jsonl"))
    trainer.train()

At each check point (every epoch, or every N optimizer steps) the callback scores the samples
(all, or a fixed seeded subset) on the model in memory, in eval mode and under
`torch.inference_mode`, then puts it back in training mode. It goes through the same code as
`pytest --ilp-checkpoint` (`pytest_ilp.api.score_model`: the same rendering, batching and
verdict rule), so its verdicts are those the plugin gives a checkpoint saved at that point.

At each point it logs, through `Trainer.log` (console, TensorBoard, W&B...): the learned share
overall, per stage and per tag, the must-learn samples still unlearned, and from the second
point on how many samples were newly learned and newly forgotten. It rewrites (atomically)
`<output_dir>/ilp-trajectory.jsonl`: one record per sample and point,

    {"id": "q0001", "point": 3, "step": 120, "epoch": 3.0, "stage": null,
     "learned": true, "nll": 0.042, "margin": 1.7}

which `pytest --ilp-train-log` reads: forgetting events, dataset cartography and the forgetting
rule without saved history checkpoints. When training ends it writes `<output_dir>/ilp-report.json`
and prints the plugin's summary table: the report is `pytest_ilp.check` of the final model in
memory, with the last point's verdicts (not scored again), the subset as its scope (the whole
data for the data-level signals), the trajectory as its training log and no gate.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from pytest_ilp.api import score_model
from pytest_ilp.config.settings import Settings
from pytest_ilp.core.atomic import write_text_atomic
from pytest_ilp.core.backends import BackendOptions
from pytest_ilp.core.diagnosis import RuleLimits
from pytest_ilp.core.render import RenderSettings
from pytest_ilp.core.run import IN_MEMORY, check
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring import ScoringResult
from pytest_ilp.core.verdicts import Verdict
from pytest_ilp.integrations.trajectory import (
    DATASET_SOURCE,
    TRAJECTORY_FILE,
    choose_subset,
    last_point,
    load_data,
    points,
    read_trajectory,
)
from pytest_ilp.report.records import json_text
from pytest_ilp.report.terminal import summary_lines

__all__ = ["DATASET_SOURCE", "TRAJECTORY_FILE", "ILPCallback", "choose_subset", "load_data"]

REPORT_FILE = "ilp-report.json"
#: the prefix of every figure the callback logs.
PREFIX = "ilp/"


class ILPCallback(TrainerCallback):  # type: ignore[misc]  # transformers is untyped here
    """Check the SFT samples on the model in memory during training; see the module docstring.

    Args:
        data: a data file or folder (or several), the records themselves (the `Dataset` or
            list of dicts given to the trainer), or `Sample`s from `pytest_ilp.api.read_samples`.
        every: ``"epoch"`` (at the end of every epoch), or a number of optimizer steps.
        sample: check a fixed subset of this many samples, drawn with `seed`; None: all.
        seed: the seed of the subset.
        trainer: the trainer, whose `log` the figures go through (as TRL's callbacks take it).
            Without it they are appended to `state.log_history` only, with a warning.
        stage: the name of this run's stage of sequential fine-tuning (the data's `stage`
            values): written on every trajectory point, so forgetting is told per stage.
        continues: the trajectory of the previous stage's run: its points are copied first,
            so that this run's file holds the whole trajectory.
        output_dir: where the trajectory and the report go; default the trainer's output_dir.
        tokenizer: the tokenizer that renders the samples; default the trainer's
            processing_class.
        render: how samples become tokens (as `render` in ilp.yaml); default auto, as TRL.
        batch_tokens: padded tokens per scoring batch; default the hf backend's.
        fragile_margin: as `--ilp-fragile-margin`.
        generate_max_tokens: tokens generated to show what an unlearned sample produces, for
            the final report only.
        diagnosis: the thresholds of the diagnosis rules (ilp.yaml `diagnosis:`).
        report: write the final report and print its summary.
    """

    def __init__(
        self,
        data: Any,
        *,
        every: str | int = "epoch",
        sample: int | None = None,
        seed: int = 0,
        trainer: Any = None,
        stage: str | None = None,
        continues: str | os.PathLike[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        tokenizer: Any = None,
        render: RenderSettings | None = None,
        batch_tokens: int | None = None,
        fragile_margin: float = 0.1,
        generate_max_tokens: int = 64,
        diagnosis: RuleLimits | None = None,
        report: bool = True,
    ) -> None:
        if every != "epoch" and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValueError(
                f"ILPCallback(every={every!r}): give 'epoch' or a number of steps >= 1"
            )
        if sample is not None and (isinstance(sample, bool) or sample < 1):
            raise ValueError(f"ILPCallback(sample={sample!r}): give None (all) or a count >= 1")
        self.every = every
        self.trainer = trainer
        self.stage = stage
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.tokenizer = tokenizer
        #: the settings of every point's scoring and of the final report's `check`.
        self.settings = (
            Settings(
                checkpoint=IN_MEMORY,
                fragile_margin=fragile_margin,
                generate_max_tokens=generate_max_tokens,
                diagnosis=diagnosis or RuleLimits(),
            )
            .with_backend_options(BackendOptions(batch_tokens=batch_tokens))
            .with_render(render or RenderSettings())
        )
        self.write_report = report
        everything = load_data(data)
        self.invalid = [s for s in everything if s.problem is not None]
        checkable = [s for s in everything if s.problem is None]
        self.samples = choose_subset(checkable, sample, seed)
        #: every sample (the subset's near-duplicates are looked for among all of them).
        self.all_samples = everything
        if self.invalid:
            listed = "; ".join(f"{s.location} ({s.id}): {s.problem}" for s in self.invalid[:5])
            more = f" and {len(self.invalid) - 5} more" if len(self.invalid) > 5 else ""
            warnings.warn(
                f"ILPCallback: {len(self.invalid)} sample(s) cannot be checked and are reported "
                f"as invalid: {listed}{more}",
                stacklevel=2,
            )
        self.previous = read_trajectory(Path(continues)) if continues is not None else []
        self.records: list[dict[str, Any]] = list(self.previous)
        self.points = 1 + max((int(r.get("point", 0)) for r in self.previous), default=0)
        #: each sample's verdict at the last point (the previous stage's last, when continuing).
        self.last: dict[str, bool] | None = last_point(self.previous)
        self.last_step: int | None = None
        self.final: ScoringResult | None = None
        self.seconds = 0.0
        #: figures logged at each point, in order (also what went to `Trainer.log`).
        self.history: list[dict[str, float]] = []
        self._warned_no_trainer = False
        self._warned_problems = False

    # -- trainer events ------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Resuming from a checkpoint (`train(resume_from_checkpoint=...)`): keep the points
        this run's trajectory file already holds up to the step training resumes from."""
        path = self._output_dir(args) / TRAJECTORY_FILE
        if state.global_step == 0 or self.last_step is not None or not path.is_file():
            return
        continued = max((int(r.get("point", 0)) for r in self.previous), default=0)
        kept = [
            r
            for r in read_trajectory(path)
            if int(r.get("point", 0)) > continued
            and r.get("stage") == self.stage
            and isinstance(r.get("step"), int)
            and r["step"] <= state.global_step
        ]
        if kept:
            self.records = [*self.previous, *kept]
            self.points = 1 + max(int(r.get("point", 0)) for r in self.records)
            self.last = last_point(kept)
            self.last_step = max(r["step"] for r in kept)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if isinstance(self.every, int) and state.global_step % self.every == 0:
            self._check(args, state, control, kwargs)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every == "epoch":
            self._check(args, state, control, kwargs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        if self.last_step != state.global_step:  # steps since the last point: one more
            self._check(args, state, control, kwargs, final=True)
        if self.write_report:
            self._report(self._output_dir(args), kwargs)

    # -- a check point -------------------------------------------------------------------------

    def _check(
        self, args: Any, state: Any, control: Any, kwargs: Mapping[str, Any], final: bool = False
    ) -> None:
        if not state.is_world_process_zero or self.last_step == state.global_step:
            return
        # The last point of a run that goes to its end is the final model: generate what its
        # unlearned samples produce now, for the report, instead of scoring twice.
        final = final or (state.max_steps > 0 and state.global_step >= state.max_steps)
        started = time.perf_counter()
        result = self._score(kwargs, produce=final and self.write_report)
        if result.problems and not self._warned_problems:
            self._warned_problems = True
            listed = "; ".join(f"{i}: {p}" for i, p in list(result.problems.items())[:5])
            warnings.warn(
                f"ILPCallback: {len(result.problems)} sample(s) cannot be scored on this model "
                f"and are reported as invalid: {listed}",
                stacklevel=2,
            )
        verdicts = result.verdicts
        figures = self._figures(verdicts)
        for sample in self.samples:
            verdict = verdicts.get(sample.id)
            if verdict is None:
                continue
            self.records.append(
                {
                    "id": sample.id,
                    "point": self.points,
                    "step": state.global_step,
                    "epoch": None if state.epoch is None else round(float(state.epoch), 4),
                    "stage": self.stage,
                    "learned": verdict.learned,
                    "nll": verdict.nll,
                    "margin": verdict.margin,
                }
            )
        self.points += 1
        self.last = {i: v.learned for i, v in verdicts.items()}
        self.last_step = state.global_step
        self.final = result if final and self.write_report else None
        write_text_atomic(
            self._output_dir(args) / TRAJECTORY_FILE,
            "".join(json_text(r, indent=None) + "\n" for r in self.records),
        )
        figures[f"{PREFIX}seconds"] = time.perf_counter() - started
        self.seconds += figures[f"{PREFIX}seconds"]
        self.history.append(figures)
        self._log(state, control, figures)

    def _score(self, kwargs: Mapping[str, Any], produce: bool) -> ScoringResult:
        # In eval mode for the pass (no dropout), then back in training mode: score_model
        # switches a model in memory.
        model, tokenizer = self._model(kwargs)
        return score_model(
            model,
            tokenizer,
            self.samples,
            produce=produce,
            options=self.settings.backend_options,
            render=self.settings.render,
            generate_max_tokens=self.settings.generate_max_tokens,
        )

    def _model(self, kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
        """The trainer's model and the tokenizer that renders the samples."""
        model = kwargs.get("model")
        tokenizer = self.tokenizer or kwargs.get("processing_class")
        if model is None:
            raise RuntimeError("ILPCallback: the trainer passed no model to its callbacks")
        if tokenizer is None:
            raise ValueError(
                "ILPCallback needs the tokenizer that renders the samples: give the trainer "
                "processing_class=tokenizer, or ILPCallback(tokenizer=...)"
            )
        return model, getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps one

    def _figures(self, verdicts: Mapping[str, Verdict]) -> dict[str, float]:
        """The learned shares, must-learn count and changes since the last point."""
        scored = [s for s in self.samples if s.id in verdicts]
        figures: dict[str, float] = {f"{PREFIX}learned": _share(scored, verdicts)}
        for stage in sorted({s.stage for s in scored if s.stage is not None}):
            group = [s for s in scored if s.stage == stage]
            figures[f"{PREFIX}learned/stage/{stage}"] = _share(group, verdicts)
        for tag in sorted({t for s in scored for t in s.tags}):
            group = [s for s in scored if tag in s.tags]
            figures[f"{PREFIX}learned/tag/{tag}"] = _share(group, verdicts)
        if any(s.must_learn for s in scored):
            figures[f"{PREFIX}must_learn_unlearned"] = sum(
                1 for s in scored if s.must_learn and not verdicts[s.id].learned
            )
        if self.last is not None:
            before = self.last
            figures[f"{PREFIX}newly_learned"] = sum(
                1 for i, v in verdicts.items() if v.learned and before.get(i) is False
            )
            figures[f"{PREFIX}newly_forgotten"] = sum(
                1 for i, v in verdicts.items() if not v.learned and before.get(i) is True
            )
        invalid = len(self.invalid) + len(self.samples) - len(scored)
        if invalid:
            figures[f"{PREFIX}invalid"] = invalid
        return figures

    def _log(self, state: Any, control: Any, figures: dict[str, float]) -> None:
        if self.trainer is not None:
            # Trainer.log resets `should_log`: a log the trainer planned for this step (its loss
            # at the end of an epoch) must still happen.
            planned = control.should_log
            self.trainer.log(dict(figures))
            control.should_log = planned
            return
        state.log_history.append({**figures, "epoch": state.epoch, "step": state.global_step})
        if not self._warned_no_trainer:
            self._warned_no_trainer = True
            warnings.warn(
                "ILPCallback has no trainer, so its figures go to state.log_history only; "
                "create it with ILPCallback(trainer=trainer, ...) and trainer.add_callback(...) "
                "to log them through Trainer.log (console, TensorBoard, W&B)",
                stacklevel=2,
            )

    def _output_dir(self, args: Any) -> Path:
        folder = self.output_dir or Path(args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -- the final report ----------------------------------------------------------------------

    def _report(self, folder: Path, kwargs: Mapping[str, Any]) -> None:
        """`pytest_ilp.check` of the final model, named after `folder`: the samples checked
        (then those that cannot be) in scope, the whole data for the data-level signals, the
        trajectory as its training log (as `--ilp-train-log` gives it), no base model, no
        gate. The last point's verdicts are used as they are; after an early stop (a last
        point without generation) the model is scored once more."""
        model, tokenizer = self._model(kwargs)
        run = check(
            data=self.all_samples,
            config=replace(self.settings, checkpoint=folder),
            model=model,
            tokenizer=tokenizer,
            scope=[s.id for s in [*self.samples, *self.invalid]],
            scored=self.final,
            train_log=self.records,
            gate=False,
        )
        run.write_report(folder / REPORT_FILE)
        timing = (
            f"checked {len(self.samples)} samples at {self.points - 1 - points(self.previous)} "
            f"points in {self.seconds:.1f} s; trajectory {folder / TRAJECTORY_FILE}, "
            f"report {folder / REPORT_FILE}"
        )
        report = run.report
        lines = summary_lines(
            report.summary, str(folder), report.backend, timing, report.fragile_margin
        )
        print("\n".join(["pytest-ilp (ILPCallback)", *lines]), file=sys.stderr, flush=True)


def _share(samples: Sequence[Sample], verdicts: Mapping[str, Verdict]) -> float:
    if not samples:
        return math.nan
    return sum(1 for s in samples if verdicts[s.id].learned) / len(samples)
