"""Samples as pytest tests: data files collect into items, and `ilp_sample` parametrizes tests.

Data-driven: every configured data file is a collector whose items are its samples, with node
ids `<data file>::<sample id>`. Python: a test that takes the `ilp_sample` fixture runs once per
sample of `@pytest.mark.ilp_dataset(...)` (or of the configured data).

Every sample item carries the `ilp` marker, and the `must_learn` marker when the sample is
must-learn (record field or ilp.yaml selector), so `-m ilp` and `-m must_learn` select them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ExceptionInfo, TerminalRepr

from pytest_ilp.checks import record_properties
from pytest_ilp.errors import IlpDataError, NotLearned, SampleProblem
from pytest_ilp.report import SampleOutcome, failure_text, problem_text
from pytest_ilp.samples import Sample, expand_data_paths
from pytest_ilp.session import STATE_KEY, IlpSession

SAMPLE_KEY = pytest.StashKey[Sample]()


def sample_of(item: pytest.Item) -> Sample | None:
    """The sample an item checks, for data items and `ilp_sample`-parametrized tests alike."""
    sample = item.stash.get(SAMPLE_KEY, None)
    if sample is not None:
        return sample
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        param = callspec.params.get("ilp_sample")
        if isinstance(param, Sample):
            return param
    return None


def is_must_learn(item: pytest.Item) -> bool:
    return item.get_closest_marker("must_learn") is not None


def _sample_items(collector: pytest.Collector, session: IlpSession) -> Iterator[IlpSampleItem]:
    try:
        samples = session.samples_of(collector.path)
    except IlpDataError as exc:
        raise collector.CollectError(str(exc)) from None
    for sample in samples:
        item = IlpSampleItem.from_parent(collector, name=sample.id)
        item.stash[SAMPLE_KEY] = sample
        item.add_marker("ilp")
        if sample.must_learn:
            item.add_marker("must_learn")
        yield item


class IlpDataFile(pytest.File):
    """A JSONL/JSON/YAML/Parquet data file: one item per sample."""

    def collect(self) -> Iterator[IlpSampleItem]:
        yield from _sample_items(self, self.config.stash[STATE_KEY])


class IlpDatasetDir(pytest.Directory):
    """A dataset folder saved with `save_to_disk`: one item per row."""

    def collect(self) -> Iterator[IlpSampleItem]:
        yield from _sample_items(self, self.config.stash[STATE_KEY])


class IlpSampleItem(pytest.Item):
    """Passes when the checkpoint reproduces the sample under greedy decoding."""

    @property
    def sample(self) -> Sample:
        return self.stash[SAMPLE_KEY]

    def setup(self) -> None:
        # A sample that cannot be checked is an error (broken data), not a failure (model).
        self.config.stash[STATE_KEY].outcome(self.sample)

    def runtest(self) -> None:
        outcome = self.config.stash[STATE_KEY].outcome(self.sample)
        record_properties(self, outcome)
        assert outcome.verdict is not None
        if not outcome.verdict.learned:
            raise NotLearned(outcome.verdict)

    def repr_failure(
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        text = ilp_failure_text(self, excinfo.value)
        return text if text is not None else super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.sample.line - 1, f"ilp sample {self.sample.id}"


def ilp_failure_text(item: pytest.Item, error: BaseException) -> str | None:
    """Our own report for an unlearned or unscorable sample; None for any other error."""
    if STATE_KEY not in item.config.stash:
        return None
    session = item.config.stash[STATE_KEY]
    if isinstance(error, NotLearned):
        sample = session.samples.get(error.verdict.sample_id)
        if sample is None:
            return None
        must_learn = session.in_scope.get(sample.id, False) or is_must_learn(item)
        return failure_text(SampleOutcome(sample, must_learn, error.verdict), session.rootpath)
    sample = sample_of(item)
    if isinstance(error, SampleProblem) and sample is not None:
        return problem_text(sample, str(error), session.rootpath)
    return None


def parametrize_samples(metafunc: pytest.Metafunc, session: IlpSession) -> None:
    """Parametrize `ilp_sample` over the marker's data files, or the configured data."""
    marker = metafunc.definition.get_closest_marker("ilp_dataset")
    if marker is not None:
        if not marker.args:
            raise pytest.Collector.CollectError(
                f"{metafunc.definition.nodeid}: @pytest.mark.ilp_dataset needs at least one path"
            )
        base = metafunc.definition.path.parent
        try:
            paths = expand_data_paths([base / str(p) for p in marker.args])
        except IlpDataError as exc:
            raise pytest.Collector.CollectError(f"ilp_dataset marker: {exc}") from None
    else:
        paths = session.data_files
    if not paths:
        raise pytest.Collector.CollectError(
            f"{metafunc.definition.nodeid} takes ilp_sample but no data is given: add "
            "@pytest.mark.ilp_dataset('data.jsonl') or pass --ilp-data"
        )
    params = []
    for path in paths:
        try:
            samples = session.samples_of(path)
        except IlpDataError as exc:
            raise pytest.Collector.CollectError(str(exc)) from None
        for sample in samples:
            marks = [pytest.mark.ilp]
            if sample.must_learn:
                marks.append(pytest.mark.must_learn)
            params.append(pytest.param(sample, id=sample.id, marks=marks))
    metafunc.parametrize("ilp_sample", params, indirect=True)
