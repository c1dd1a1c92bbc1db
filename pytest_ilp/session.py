"""The state of one pytest-ilp run, kept in `config.stash` under `STATE_KEY`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_ilp.backends import Progress
from pytest_ilp.cache import ScoreCache
from pytest_ilp.checkpoint import CheckpointInfo, inspect_checkpoint
from pytest_ilp.errors import IlpDataError, SampleProblem
from pytest_ilp.report import SampleOutcome
from pytest_ilp.samples import Sample, expand_data_paths, load_samples
from pytest_ilp.scoring import ScoringResult, score_samples
from pytest_ilp.settings import Settings

#: a line of progress in a log that is not a terminal, at most this often (seconds).
LOG_PROGRESS_EVERY = 30.0


@dataclass
class IlpSession:
    """Settings, loaded samples and, once scoring ran, the verdicts of one pytest run."""

    settings: Settings
    checkpoint: CheckpointInfo
    rootpath: Path
    cache: ScoreCache | None
    data_files: list[Path] = field(default_factory=list)
    samples: dict[str, Sample] = field(default_factory=dict)
    _by_path: dict[Path, list[Sample]] = field(default_factory=dict)
    result: ScoringResult | None = None
    #: samples of the selected items, in item order, with their must-learn flag.
    in_scope: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings, rootpath: Path, cache_root: Path | None) -> IlpSession:
        checkpoint = inspect_checkpoint(settings.checkpoint)
        try:
            data_files = expand_data_paths(settings.data)
        except IlpDataError as exc:
            raise pytest.UsageError(f"--ilp-data: {exc}") from None
        cache = ScoreCache(cache_root) if settings.use_cache and cache_root else None
        return cls(settings, checkpoint, rootpath, cache, [p.resolve() for p in data_files])

    def samples_of(self, path: Path) -> list[Sample]:
        """The samples of one data file, loaded once; ids stay unique across all files."""
        path = path.resolve()
        if path not in self._by_path:
            self._by_path[path] = load_samples(path, self.settings.must_learn, self.samples)
        return self._by_path[path]

    def score(
        self,
        scope: Sequence[tuple[Sample, bool]],
        log: Callable[[str], None],
        progress: Callable[[int], Progress],
    ) -> None:
        """Score every sample in scope (deduplicated), once per session."""
        for sample, must_learn in scope:
            self.in_scope[sample.id] = self.in_scope.get(sample.id, False) or must_learn
        samples = [self.samples[i] for i in self.in_scope]
        self.result = score_samples(
            samples, self.settings, self.checkpoint, self.cache, log, progress
        )

    def outcome(self, sample: Sample) -> SampleOutcome:
        """The verdict of a sample; raises `SampleProblem` when it could not be scored."""
        if sample.problem is not None:
            raise SampleProblem(sample.problem)
        if self.result is None:
            raise RuntimeError("pytest-ilp: samples are scored before the first test runs")
        problem = self.result.problems.get(sample.id)
        if problem is not None:
            raise SampleProblem(problem)
        return SampleOutcome(
            sample,
            must_learn=self.in_scope.get(sample.id, sample.must_learn),
            verdict=self.result.verdicts[sample.id],
        )

    def outcomes(self) -> list[SampleOutcome]:
        """Every sample in scope, in item order."""
        assert self.result is not None
        return [
            SampleOutcome(
                self.samples[sample_id],
                must_learn=must_learn,
                verdict=self.result.verdicts.get(sample_id),
                problem=self.result.problems.get(sample_id),
            )
            for sample_id, must_learn in self.in_scope.items()
        ]


STATE_KEY = pytest.StashKey[IlpSession]()


def progress_reporter(write_line: Callable[[str], None]) -> Callable[[int], Progress]:
    """A progress callback factory: a tqdm bar on a terminal, a line every 30 s in a CI log."""

    def start(total: int) -> Progress:
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="sample", desc="ilp scoring", leave=False)

            def advance_bar(done: int) -> None:
                bar.update(done)
                if bar.n >= total:
                    bar.close()

            return advance_bar
        done_so_far = 0
        last = time.monotonic()

        def advance_log(done: int) -> None:
            nonlocal done_so_far, last
            done_so_far += done
            if time.monotonic() - last >= LOG_PROGRESS_EVERY and done_so_far < total:
                last = time.monotonic()
                write_line(f"ilp: scored {done_so_far}/{total} samples")

        return advance_log

    return start
