"""The training log (`--ilp-train-log`): per-sample losses, or the trajectory that `ILPCallback`
writes, read into points; dataset cartography over them (`TrainingSignals`), and history
signals from a trajectory's verdicts when no checkpoints were saved.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.signals import CheckpointVerdict, HistorySignals, TrainingSignals


@dataclass(frozen=True)
class LogPoint:
    """One sample at one point of training, read from `--ilp-train-log`.

    A plain training log gives the loss alone; a trajectory written by
    `pytest_ilp.integrations.transformers.ILPCallback` also gives the verdict and margin the
    model had at that point (its `nll` stands for the loss).
    """

    #: how the point is named in evidence: "step 120", "stage1 epoch 3".
    label: str
    #: the step, or the epoch when the record gives no step.
    when: float
    #: mean nats per target token.
    loss: float
    learned: bool | None = None
    margin: float | None = None
    stage: str | None = None


TrainLog = dict[str, list[LogPoint]]


def read_train_log(path: Path) -> TrainLog:
    """`{id: [LogPoint, ...]}` from a JSONL training log, in training order.

    Records are `{id, step or epoch, loss}` (a per-sample loss log), or the callback's
    trajectory `{id, point, step, epoch, stage, learned, nll, margin}`. Points are ordered by
    `point` where records give it (steps restart when a second stage trains on), else by step
    or epoch.
    """
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise IlpDataError(f"{path}: cannot read the training log ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise IlpDataError(f"{path}: the training log is not UTF-8 text") from None
    return parse_train_log(lines, str(path))


def parse_train_log(lines: Iterable[str], where: str) -> TrainLog:
    """`read_train_log` on lines of JSON; errors name `where` and the line number."""
    rows: dict[str, list[tuple[tuple[float, float], LogPoint]]] = defaultdict(list)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sample_id, order, point = _log_point(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise IlpDataError(
                f"{where}:{number}: expected a JSON record {{id, step or epoch, loss}} or a "
                "trajectory record {id, step, nll, learned, margin} (written by ILPCallback)"
            ) from None
        rows[sample_id].append((order, point))
    return {k: _unique_labels([p for _, p in sorted(v, key=_order)]) for k, v in rows.items()}


def _order(row: tuple[tuple[float, float], LogPoint]) -> tuple[float, float]:
    return row[0]


def _log_point(record: dict[str, Any]) -> tuple[str, tuple[float, float], LogPoint]:
    sample_id = str(record["id"])
    unit = "step" if record.get("step") is not None else "epoch"
    when = record.get(unit)
    if when is None or isinstance(when, bool) or not isinstance(when, (int, float)):
        raise KeyError(unit)
    loss = record.get("loss", record.get("nll"))
    if isinstance(loss, bool) or not isinstance(loss, (int, float)):
        raise TypeError("loss")
    learned = record.get("learned")
    if learned is not None and not isinstance(learned, bool):
        raise TypeError("learned")
    margin = record.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        raise TypeError("margin")
    stage = record.get("stage")
    if stage is not None and not isinstance(stage, str):
        raise TypeError("stage")
    index = record.get("point")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise TypeError("point")
    label = f"{stage} {unit} {float(when):g}" if stage else f"{unit} {float(when):g}"
    order = (float(index), float(when)) if index is not None else (float(when), 0.0)
    point = LogPoint(
        label=label,
        when=float(when),
        loss=float(loss),
        learned=learned,
        margin=None if margin is None else float(margin),
        stage=stage,
    )
    return sample_id, order, point


def _unique_labels(points: list[LogPoint]) -> list[LogPoint]:
    """Number the repeats of a label ("step 40 (2)"): evidence names points by label."""
    seen: Counter[str] = Counter()
    unique = []
    for point in points:
        seen[point.label] += 1
        if seen[point.label] > 1:
            point = replace(point, label=f"{point.label} ({seen[point.label]})")
        unique.append(point)
    return unique


def training_signals(points: Sequence[LogPoint]) -> TrainingSignals:
    probabilities = [math.exp(-p.loss) for p in points]
    verdicts = [p.learned for p in points if p.learned is not None]
    return TrainingSignals(
        points=len(points),
        confidence=statistics.fmean(probabilities),
        variability=statistics.pstdev(probabilities) if len(probabilities) > 1 else 0.0,
        loss_trend=points[-1].loss - points[-2].loss if len(points) > 1 else None,
        learned_points=sum(verdicts) if verdicts else None,
        forgetting_events=(
            sum(1 for a, b in itertools.pairwise(verdicts) if a and not b) if verdicts else None
        ),
    )


def trajectory_history(
    points: Sequence[LogPoint], final: CheckpointVerdict, stage: str | None
) -> HistorySignals | None:
    """History signals from a trajectory's verdicts instead of saved checkpoints.

    The points (those with a verdict) come before the checkpoint under test, `final`. When the
    points carry stage names, they map stages as ilp.yaml's `history` does: the last point of
    a stage ends it, and the last point's stage is the final one, whose samples cannot have
    been forgotten; `stage` is the sample's own. None when no point has a verdict.
    """
    judged = [p for p in points if p.learned is not None]
    if not judged:
        return None
    trajectory = tuple(
        CheckpointVerdict(
            p.label, bool(p.learned), p.loss, p.margin if p.margin is not None else math.nan
        )
        for p in judged
    )
    mapped = any(p.stage is not None for p in judged)
    own = None
    if mapped and stage is not None and stage != judged[-1].stage:
        own = next((p.label for p in reversed(judged) if p.stage == stage), None)
    return HistorySignals((*trajectory, final), own_stage=own, stages_mapped=mapped)
