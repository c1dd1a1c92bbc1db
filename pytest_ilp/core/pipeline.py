"""The whole check of one run, in order: load the samples, score them on the checkpoint under
test, score the unlearned ones on the history and base checkpoints, gather their signals,
diagnose them, decide the gate, build the report.

A `Pipeline` holds one run's inputs and results. The pytest plugin drives it step by step
(its items decide what is in scope, its markers the criteria and the budget scopes);
`pytest_ilp.check` runs every step on a data set at once, also on a model in memory with
verdicts scored already (the trainer callback's final report). Nothing here imports pytest.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from pytest_ilp.config.settings import Settings, Stage
from pytest_ilp.core.backends import LiveModel, Progress
from pytest_ilp.core.baseline import Baseline, BaselineError, load_baseline
from pytest_ilp.core.cache import ScoreCache, stable_hash
from pytest_ilp.core.checkpoint import CheckpointInfo, in_memory, inspect_checkpoint
from pytest_ilp.core.criteria import Criterion
from pytest_ilp.core.datafiles import load_samples
from pytest_ilp.core.datapaths import expand_data_paths
from pytest_ilp.core.diagnosis import Diagnosis
from pytest_ilp.core.errors import IlpDataError, IlpUsageError, IlpWarning
from pytest_ilp.core.evidence import (
    NO_BASE,
    NO_HISTORY,
    Passes,
    gather_signals,
    trajectory_judged,
)
from pytest_ilp.core.results import Results
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring import IncompatibleTokenizer, Job, ScoringResult, score_samples
from pytest_ilp.core.signals import Signals
from pytest_ilp.core.train_log import TrainLog, read_train_log
from pytest_ilp.core.verdicts import Verdict

#: learned samples the base model also scores, as the reference for how familiar prompts are.
FAMILIARITY_REFERENCE = 200

#: decides the cause of one unlearned sample from its signals.
Diagnoser = Callable[[Sample, Verdict, Signals], Diagnosis]
#: a progress callback factory: called with the number of samples to score, it returns the
#: callback that is told how many more were scored.
ProgressFactory = Callable[[int], Progress]

P = TypeVar("P", bound="Pipeline")


@dataclass(kw_only=True)
class Pipeline(Results):
    """Settings, loaded samples and, once scoring ran, the verdicts of one run (what follows
    from them: `Results`)."""

    checkpoint: CheckpointInfo
    cache: ScoreCache | None
    #: the data files (and saved dataset folders), resolved.
    data_files: list[Path] = field(default_factory=list)
    #: the same, as found (absolute, links not resolved).
    data_paths: list[Path] = field(default_factory=list)
    base: CheckpointInfo | None = None
    history: list[tuple[Stage, CheckpointInfo]] = field(default_factory=list)
    #: the stage name ilp.yaml gives the checkpoint under test, if it lists it.
    final_stage: str | None = None
    train_log: TrainLog | None = None
    _by_path: dict[Path, list[Sample]] = field(default_factory=dict)
    #: the criterion each sample in scope is judged by.
    criteria: dict[str, Criterion] = field(default_factory=dict)
    #: the model under test when it is in memory (a training run's), scored as it is instead
    #: of loading `checkpoint`, which then only names it.
    live: LiveModel | None = None

    @classmethod
    def create(
        cls: type[P],
        settings: Settings,
        rootpath: Path,
        cache_root: Path | None,
        run_cache: Path | None = None,
        *,
        live: LiveModel | None = None,
        train_log: TrainLog | None = None,
    ) -> P:
        """The run's checkpoints inspected, its data files found and its baseline read; raises
        `IlpUsageError` saying what is wrong with them.

        `run_cache`: a cache folder shared by the processes of this run only (xdist workers
        with the persistent cache off), so that they still score each sample once.
        `live`: the model under test in memory, described as if saved into
        `settings.checkpoint`; never cached (its weights change while it trains).
        `train_log`: the training log read already (a trajectory in memory), instead of
        `settings.train_log`'s file."""
        if live is not None:
            checkpoint = in_memory(live.model, settings.checkpoint)
        else:
            checkpoint = inspect_checkpoint(
                settings.checkpoint, adapter_base=settings.backend_options.adapter_base
            )
        try:
            data_files = expand_data_paths(settings.data)
        except IlpDataError as exc:
            raise IlpUsageError(f"--ilp-data: {exc}") from None
        if train_log is None and settings.train_log is not None:
            try:
                train_log = read_train_log(settings.train_log)
            except IlpDataError as exc:
                raise IlpUsageError(f"--ilp-train-log: {exc}") from None
        if live is not None:
            cache: ScoreCache | None = None
        elif settings.use_cache and cache_root is not None:
            cache = ScoreCache(cache_root)
        else:
            cache = ScoreCache(run_cache) if run_cache is not None else None
        under_test = settings.checkpoint.resolve()
        return cls(
            settings=settings,
            checkpoint=checkpoint,
            rootpath=rootpath,
            cache=cache,
            data_files=[p.resolve() for p in data_files],
            data_paths=[p.absolute() for p in data_files],
            base=inspect_checkpoint(settings.base, "--ilp-base") if settings.base else None,
            history=[
                (stage, inspect_checkpoint(stage.checkpoint, "--ilp-history"))
                for stage in settings.history
                # The final stage may be listed too (ilp.yaml maps every stage): it is the
                # checkpoint under test, scored once.
                if stage.checkpoint.resolve() != under_test
            ],
            final_stage=next(
                (s.name for s in settings.history if s.checkpoint.resolve() == under_test), None
            ),
            train_log=train_log,
            baseline=_baseline(settings),
            live=live,
        )

    def samples_of(self, path: Path) -> list[Sample]:
        """The samples of one data file, loaded once; ids stay unique across all files."""
        path = path.resolve()
        if path not in self._by_path:
            self._by_path[path] = load_samples(path, self.settings.must_learn, self.samples)
        return self._by_path[path]

    def add_samples(self, samples: Sequence[Sample]) -> list[Sample]:
        """Samples read already, checked beside those of the data files; ids must be unique."""
        for sample in samples:
            if sample.id in self.samples:
                raise IlpDataError(
                    f"sample id {sample.id!r} is given twice ({sample.location}): give each "
                    "sample once, or read the files with pytest_ilp.api.read_samples"
                )
            self.samples[sample.id] = sample
        return list(samples)

    def unselected_data_samples(self, listed: set[str]) -> list[Sample]:
        """The checkable samples of the configured data files that are not in `listed`."""
        found = []
        for path in self.data_files:
            try:
                samples = self.samples_of(path)
            except IlpDataError:
                continue  # its collection error is reported already
            found += [s for s in samples if s.id not in listed and s.problem is None]
        return found

    def score(
        self,
        scope: Sequence[tuple[Sample, bool]],
        log: Callable[[str], None],
        progress: ProgressFactory,
        diagnoser: Diagnoser,
        criteria: Mapping[str, Criterion] | None = None,
        others: Sequence[tuple[Sample, bool]] = (),
        scored: ScoringResult | None = None,
    ) -> None:
        """Score every sample in scope (deduplicated) once per run, then diagnose the
        unlearned ones: the checkpoint under test, each history checkpoint, the base model.

        `scored`: the checkpoint under test's verdicts on the samples in scope, scored already
        (the trainer callback's last point): taken as they are, that pass is not run again.

        `criteria`: each sample's criterion (markers applied); by default the settings'.
        Every checkpoint judges a sample by the same criterion, so "learned at an earlier
        stage" means what "learned" means for the final one.

        `others`: the samples the selection left out. Those whose verdicts (and, when
        unlearned, every diagnosis input) the cache holds are read from it, never scored, and
        diagnosed with the rest: they count towards the budgets (`self.outside`)."""
        for sample, must_learn in scope:
            self.in_scope[sample.id] = self.in_scope.get(sample.id, False) or must_learn
        samples = [self.samples[i] for i in self.in_scope]
        outside: dict[str, bool] = {}
        for sample, must_learn in others:
            if sample.id not in self.in_scope:
                outside[sample.id] = outside.get(sample.id, False) or must_learn
        # Read from the cache only: a sample outside the selection counts only when everything
        # its gate decision needs is known.
        known = [self.samples[i] for i in outside] if self.cache is not None else []
        self.criteria = {
            s.id: (criteria or {}).get(s.id) or self.settings.criterion_for(s)
            for s in [*samples, *known]
        }

        def run(job: Job, subset: list[Sample], known: list[Sample]) -> ScoringResult:
            result = score_samples(subset, self.settings, job, self.cache, log, progress)
            self.passes.append(result)
            if known:
                cached = score_samples(
                    known, self.settings, job, self.cache, log, progress, cached_only=True
                )
                result = replace(
                    result,
                    verdicts={**result.verdicts, **cached.verdicts},
                    probes={**result.probes, **cached.probes},
                )
            return result

        def job(info: CheckpointInfo, **kwargs: Any) -> Job:
            # A model in memory has no folder to load its tokenizer from: the base and history
            # checkpoints' samples are rendered with the one given with it.
            tokenizer = self.live.tokenizer if self.live is not None else None
            return Job(
                info,
                self.checkpoint,
                criteria=self.criteria,
                renderer_tokenizer=tokenizer,
                **kwargs,
            )

        if scored is not None:
            self.result = final = _scored_already(scored, samples)
            self.passes.append(final)
        else:
            self.result = final = run(job(self.checkpoint, live=self.live), samples, known)
        known_ids = {s.id for s in known} & set(final.verdicts)
        unlearned = {
            i: v
            for i, v in final.verdicts.items()
            if not v.learned and (i in self.in_scope or i in known_ids)
        }
        if unlearned:
            known_ids &= self._diagnose_all(unlearned, known_ids, run, job, diagnoser)
        self.outside = {i: (final.verdicts[i], outside[i]) for i in outside if i in known_ids}

    def _diagnose_all(
        self,
        unlearned: dict[str, Verdict],
        known_ids: set[str],
        run: Callable[[Job, list[Sample], list[Sample]], ScoringResult],
        job: Callable[..., Job],
        diagnoser: Diagnoser,
    ) -> set[str]:
        """Score the base and history checkpoints on the unlearned samples and diagnose them;
        returns the ids outside the selection that could be diagnosed from the cache."""
        assert self.result is not None
        # The base and history checkpoints only explain failures: they score the unlearned
        # samples alone (those outside the selection: from the cache only).
        samples = [self.samples[i] for i in unlearned if i not in known_ids]
        known = [self.samples[i] for i in unlearned if i in known_ids]
        missing: dict[str, str] = {}
        history = []
        for stage, info in self.history:
            try:
                history.append((stage, run(job(info, produce=False), samples, known)))
            except IncompatibleTokenizer as exc:
                missing["history"] = f"history signals skipped: {exc}"
                warnings.warn(IlpWarning(missing["history"]), stacklevel=1)
                history = []
                break
        if not self.history and not trajectory_judged(self.train_log):
            missing["history"] = NO_HISTORY
        base = None
        if self.base is not None:
            probe_at = {
                i: v.first_divergence.position
                for i, v in unlearned.items()
                if v.first_divergence is not None
            }
            # A few learned samples go along, so that how familiar a prompt is to the base
            # model is measured against the data's usual prompts, not the failures' alone.
            verdicts = self.result.verdicts
            learned = [self.samples[i] for i, v in verdicts.items() if v.first_divergence is None]
            reference = sorted(learned, key=lambda s: stable_hash(s.id))[:FAMILIARITY_REFERENCE]
            try:
                base = run(
                    job(self.base, produce=False, probe_at=probe_at, prompt_surprisal=True),
                    samples + reference,
                    known,
                )
            except IncompatibleTokenizer as exc:
                missing["base"] = f"base signals skipped: {exc}"
                warnings.warn(IlpWarning(missing["base"]), stacklevel=1)
        else:
            missing["base"] = NO_BASE
        # An unlearned sample outside the selection whose base or history verdict is not in
        # the cache is left out: diagnosed without it, its cause could differ from a full run's.
        for result in [*(r for _, r in history), *([base] if base is not None else [])]:
            for sample_id in {s.id for s in known} - set(result.verdicts):
                known_ids.discard(sample_id)
                unlearned.pop(sample_id, None)
        passes = Passes(self.result, history, base, self.final_stage, bool(self.history))
        limits = self.settings.diagnosis
        signals = gather_signals(unlearned, self.samples, passes, missing, self.train_log, limits)
        for sample_id, found in signals.items():
            self.signals[sample_id] = found
            self.diagnoses[sample_id] = diagnoser(
                self.samples[sample_id], unlearned[sample_id], found
            )
        return known_ids


def _scored_already(scored: ScoringResult, samples: Sequence[Sample]) -> ScoringResult:
    """`scored` narrowed to `samples`, as scoring them would give it: a sample that cannot be
    checked has its problem; one that `scored` lacks is a usage error."""
    ids = {s.id for s in samples}
    lacking = [
        s.id
        for s in samples
        if s.problem is None and s.id not in scored.verdicts and s.id not in scored.problems
    ]
    if lacking:
        raise IlpUsageError(
            f"scored: no verdict for {len(lacking)} sample(s) in scope "
            f"({', '.join(lacking[:5])}): score every sample in scope, or leave `scored` out"
        )
    return replace(
        scored,
        verdicts={i: v for i, v in scored.verdicts.items() if i in ids},
        problems={
            **{s.id: s.problem for s in samples if s.problem is not None},
            **{i: p for i, p in scored.problems.items() if i in ids},
        },
        probes={i: p for i, p in scored.probes.items() if i in ids},
        prompts={i: p for i, p in scored.prompts.items() if i in ids},
    )


def _baseline(settings: Settings) -> Baseline | None:
    path = settings.baseline
    if path is None:
        return None
    if not path.exists():
        if settings.update_baseline:
            return None  # written at the end of this run
        raise IlpUsageError(
            f"--ilp-baseline: {path} does not exist; create it with --ilp-update-baseline "
            "(it writes this run's report there)"
        )
    try:
        return load_baseline(path)
    except BaselineError as exc:
        raise IlpUsageError(f"--ilp-baseline {path}: {exc}") from None
