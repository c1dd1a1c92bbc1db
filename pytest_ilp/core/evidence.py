"""Signal assembly: the evidence on each unlearned sample, gathered from the scoring passes.

The scoring passes (the checkpoint under test, each history checkpoint, the base model) and
the run's inputs (the data, the training log) are read here into one `Signals` per unlearned
sample, the input of the diagnosis rules. Each signal is computed in `signals`; this module
only knows which pass and which input each one comes from.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pytest_ilp.config.settings import Stage
from pytest_ilp.core.dataset_signals import TargetStatistics, dataset_signals, find_siblings
from pytest_ilp.core.prompt_words import (
    least_familiar_word,
    prompt_document_frequency,
    question_template,
)
from pytest_ilp.core.rule_limits import RuleLimits
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring import ScoringResult
from pytest_ilp.core.signals import (
    AnswerHabit,
    BaseSignals,
    CheckpointVerdict,
    Familiarity,
    HistorySignals,
    Signals,
    knowledge,
)
from pytest_ilp.core.train_log import TrainLog, training_signals, trajectory_history
from pytest_ilp.core.verdicts import Verdict

#: why a part of the signals is missing for every sample, when its input was not given.
NO_BASE = "needs --ilp-base to tell missing knowledge and knowledge conflicts"
NO_HISTORY = "needs --ilp-history to tell forgetting"


@dataclass(frozen=True)
class Passes:
    """The scoring passes of one run that the signals are read from."""

    #: the checkpoint under test.
    final: ScoringResult
    #: each history checkpoint (earlier stages), in order; empty when none was scored.
    history: Sequence[tuple[Stage, ScoringResult]]
    #: the base model, or None when it was not given (or could not score these samples).
    base: ScoringResult | None
    #: the stage name of the checkpoint under test, when ilp.yaml's history names it.
    final_stage: str | None = None
    #: the history checkpoints configured (even if their pass was skipped).
    history_configured: bool = False


def trajectory_judged(train_log: TrainLog | None) -> bool:
    """Whether the training log is a trajectory with verdicts (written by ILPCallback)."""
    return any(p.learned is not None for points in (train_log or {}).values() for p in points)


def gather_signals(
    unlearned: Mapping[str, Verdict],
    samples: Mapping[str, Sample],
    passes: Passes,
    missing: Mapping[str, str],
    train_log: TrainLog | None,
    limits: RuleLimits,
) -> dict[str, Signals]:
    """The signals of every unlearned sample. `missing` says, by part, why a part is absent
    for every sample (an input not given, a pass skipped); a sample that one pass could not
    score gets its own reason."""
    verdicts = passes.final.verdicts
    # A sample that cannot be checked (an empty target, a bad record) contradicts nothing.
    checkable = [s for s in samples.values() if s.problem is None]
    siblings = find_siblings(checkable, unlearned, limits.paraphrase_candidate)
    stats = TargetStatistics.of(verdicts.values())
    prompt_df = prompt_document_frequency(checkable)
    familiar = _familiarity(passes.base, prompt_df, len(checkable))
    templates = {s.id: question_template(s, prompt_df, len(checkable)) for s in checkable}
    learned = {i for i, v in verdicts.items() if v.learned}
    habits = (
        answer_habits(passes.base.verdicts.values(), samples, templates, learned)
        if passes.base
        else {}
    )
    judged = not passes.history_configured and trajectory_judged(train_log)
    found = {}
    for sample_id, verdict in unlearned.items():
        sample = samples[sample_id]
        own_missing = dict(missing)
        # A checkpoint that could not score this one sample (a token it has no embedding
        # for) leaves that sample without its signals: say so rather than stay silent.
        base = passes.base
        if base is not None and sample_id in base.problems:
            own_missing["base"] = f"base signals skipped: {base.problems[sample_id]}"
        for stage, result in passes.history:
            if sample_id in result.problems:
                own_missing["history"] = (
                    f"history signals skipped: at {stage.label}, {result.problems[sample_id]}"
                )
        history = _history_signals(sample, passes)
        if judged:
            # No saved checkpoints: the trajectory's verdicts stand in for them.
            history = _trajectory_signals(sample, verdict, train_log, passes.final_stage)
            if history is None:
                own_missing["history"] = (
                    "the --ilp-train-log trajectory has no verdict for this sample (checked "
                    "a subset?), so forgetting cannot be told"
                )
        found[sample_id] = Signals(
            dataset=dataset_signals(
                verdict,
                siblings.get(sample_id, []),
                samples,
                verdicts,
                stats,
                limits.near_duplicate,
            ),
            base=_base_signals(
                sample_id, base, familiar.get(sample_id), stats, limits, habits.get(sample_id)
            ),
            history=history,
            training=(
                training_signals(train_log[sample_id])
                if train_log and sample_id in train_log
                else None
            ),
            missing=own_missing,
        )
    return found


def _trajectory_signals(
    sample: Sample, verdict: Verdict, train_log: TrainLog | None, final_stage: str | None
) -> HistorySignals | None:
    points = (train_log or {}).get(sample.id)
    if not points:
        return None
    final = CheckpointVerdict(final_stage or "final", verdict.learned, verdict.nll, verdict.margin)
    return trajectory_history(points, final, sample.stage)


def _base_signals(
    sample_id: str,
    base: ScoringResult | None,
    familiarity: Familiarity | None,
    stats: TargetStatistics,
    limits: RuleLimits,
    habit: AnswerHabit | None,
) -> BaseSignals | None:
    if base is None or sample_id not in base.probes:
        return None
    verdict, probe = base.verdicts[sample_id], base.probes[sample_id]
    return BaseSignals(
        checkpoint=base.checkpoint.name,
        learned=verdict.learned,
        nll=verdict.nll,
        probe=probe,
        knowledge=knowledge(verdict.learned, probe, limits.weakly_known_prob),
        familiarity=familiarity,
        answers=stats.is_answer_token(probe.top_id, probe.position),
        # The habit of the base's first answer token; a probe past it is about another token.
        habit=habit if probe.position == 0 else None,
    )


def answer_habits(
    verdicts: Iterable[Verdict],
    samples: Mapping[str, Sample],
    templates: Mapping[str, tuple[str, ...]],
    learned: Collection[str],
) -> dict[str, AnswerHabit]:
    """How the base model begins its answer to each sample it scored (`verdicts`, its own):
    on how many prompts of the same question (`templates`, by sample id) it begins with the
    same token, how many different targets those prompts have, and how often the target
    begins with it on those the fine-tuned model `learned`. (The same name can be one
    subject's answer and, to another question, the base's default guess.)"""
    Key = tuple[tuple[str, ...], int]
    given: Counter[Key] = Counter()
    right: Counter[Key] = Counter()
    judged: Counter[Key] = Counter()
    targets: dict[Key, set[str]] = defaultdict(set)
    chosen_by: dict[str, Key] = {}
    for verdict in verdicts:
        if verdict.sample_id not in templates:
            continue
        if not verdict.target_ids:
            continue
        divergence = verdict.first_divergence
        first = verdict.target_ids[0]
        # Teacher-forced, the base's greedy first token: the target's own unless it left the
        # target right there.
        chosen = divergence.predicted_id if divergence and divergence.position == 0 else first
        key = (templates[verdict.sample_id], chosen)
        chosen_by[verdict.sample_id] = key
        given[key] += 1
        if verdict.sample_id in learned:
            judged[key] += 1
            right[key] += chosen == first
        targets[key].add(" ".join(samples[verdict.sample_id].target.split()))
    return {
        i: AnswerHabit(given[key], right[key], len(targets[key]), judged[key])
        for i, key in chosen_by.items()
    }


def _history_signals(sample: Sample, passes: Passes) -> HistorySignals | None:
    trajectory = []
    final = Stage(passes.final_stage or "final", passes.final.checkpoint.location)
    for stage, result in [*passes.history, (final, passes.final)]:
        verdict = result.verdicts.get(sample.id)
        if verdict is None:
            return None
        trajectory.append(
            CheckpointVerdict(stage.label, verdict.learned, verdict.nll, verdict.margin)
        )
    if len(trajectory) < 2:
        return None
    own = next(
        (s.label for s, _ in passes.history if s.name is not None and s.name == sample.stage),
        None,
    )
    mapped = passes.final_stage is not None or any(s.name is not None for s, _ in passes.history)
    return HistorySignals(tuple(trajectory), own_stage=own, stages_mapped=mapped)


def _familiarity(
    base: ScoringResult | None, prompt_df: Mapping[str, int], prompts: int
) -> dict[str, Familiarity]:
    """Each probed prompt's least familiar content word, against the median over every prompt
    the base model scored (the unlearned ones and the learned reference)."""
    if base is None:
        return {}
    words = {}
    for sample_id, prompt in base.prompts.items():
        found = least_familiar_word(prompt.pieces, prompt.surprisal, prompt_df, prompts)
        if found is not None:
            words[sample_id] = found
    if not words:
        return {}
    median = statistics.median(nats for _, nats in words.values())
    return {
        i: Familiarity(word, round(nats, 3), round(median, 3))
        for i, (word, nats) in words.items()
        if i in base.probes
    }
