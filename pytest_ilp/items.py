"""Samples as pytest tests: data files collect into items, and `ilp_sample` parametrizes tests.

Data-driven: every configured data file is a collector whose items are its samples, with node
ids `<data file>::<sample id>`. Python: a test that takes the `ilp_sample` fixture runs once per
sample of `@pytest.mark.ilp_dataset(...)` (or of the configured data).

Every sample item carries the `ilp` marker, and the `must_learn` marker when the sample is
must-learn (record field or ilp.yaml selector), so `-m ilp` and `-m must_learn` select them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ExceptionInfo, TerminalRepr

from pytest_ilp.checks import NotLearned, enforce, gate_decision, record_properties
from pytest_ilp.config.settings import Settings
from pytest_ilp.config.values import criterion_of_marker
from pytest_ilp.core.criteria import Criterion
from pytest_ilp.core.datapaths import expand_data_paths
from pytest_ilp.core.errors import IlpDataError, IlpUsageError, SampleProblem
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.shards import Shard
from pytest_ilp.core.thresholds import RUN_THRESHOLDS, Threshold, check_names, merged
from pytest_ilp.markers import CRITERION_MARKER
from pytest_ilp.report.sample_text import failure_text, problem_text
from pytest_ilp.scopes import threshold_scope
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
        # The node id as a string: pytest (9+) parses the ids it stores for --lf the same way,
        # so an id holding "::" or "[" ("a::b", "q[1]") still matches on the next run.
        item = IlpSampleItem.from_parent(
            collector, name=sample.id, nodeid=f"{collector.nodeid}::{sample.id}"
        )
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
        enforce(self, outcome)

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
        if sample is None or session.result is None:
            return None
        outcome = session.outcome(sample)
        if outcome.verdict != error.verdict:  # a verdict of the caller's own making
            outcome = replace(outcome, verdict=error.verdict, diagnosis=None)
        must_learn = outcome.must_learn or is_must_learn(item)
        decision, _ = gate_decision(item, outcome)
        return failure_text(replace(outcome, must_learn=must_learn), session.rootpath, decision)
    sample = sample_of(item)
    if isinstance(error, SampleProblem) and sample is not None:
        return problem_text(sample, str(error), session.rootpath)
    return None


def drop_second_paths(items: list[pytest.Item]) -> None:
    """Keep one item per data sample: a data file that pytest reached twice (through a link
    and its real path) is one file, and its records are one sample each."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if isinstance(item, IlpSampleItem):
            if item.sample.id in seen:
                continue
            seen.add(item.sample.id)
        kept.append(item)
    items[:] = kept


def select_shard(config: pytest.Config, items: list[pytest.Item], shard: Shard) -> None:
    """Keep the sample items of this shard (and every item that checks no sample)."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        sample = sample_of(item)
        (keep if sample is None or shard.holds(sample.id) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


BudgetScopes = dict[str, tuple[Mapping[str, Threshold], list[str]]]


def budget_scopes(
    items: Sequence[pytest.Item], settings: Settings, valid: Sequence[str]
) -> BudgetScopes:
    """The budget scopes of the sample items: key -> (budgets, sample ids in item order).

    Raises `IlpUsageError` for a budget that names no known cause (`valid`), a bad budget
    value, or two items of one scope with different budgets.
    """
    check_names(settings.thresholds, RUN_THRESHOLDS, valid)
    scopes: BudgetScopes = {}
    seen: set[tuple[str, str]] = set()  # a list's `in` would make this quadratic in items
    for item in items:
        sample = sample_of(item)
        if sample is None:
            continue
        key, budgets = item_budgets(item, settings, valid, pytest.UsageError)
        if key not in scopes:
            scopes[key] = (budgets, [])
        elif scopes[key][0] != budgets:
            raise pytest.UsageError(
                f"{item.nodeid}: its ilp_threshold budgets differ from those of the other "
                f"samples of {key}; put the marker on the test function, class or module"
            )
        if (key, sample.id) not in seen:
            seen.add((key, sample.id))
            scopes[key][1].append(sample.id)
    # The run's own budgets first, then the markers' scopes in item order.
    return dict(sorted(scopes.items(), key=lambda scope: scope[0] != ""))


def item_budgets(
    node: pytest.Item, settings: Settings, valid: Sequence[str], error: type[Exception]
) -> tuple[str, dict[str, Threshold]]:
    """A node's scope key and budgets, its markers checked; a problem raises `error`."""
    try:
        key, markers = threshold_scope(node)
        for where, kwargs in markers:
            check_names(kwargs, where, valid)
        return key, merged(settings.thresholds, markers)
    except (pytest.UsageError, IlpUsageError) as exc:
        raise error(str(exc)) from None


def marked_criterion(node: pytest.Item) -> tuple[Criterion, str] | None:
    """The criterion of the node's closest `ilp_criterion` marker, and where it was written."""
    mark = node.get_closest_marker(CRITERION_MARKER)
    if mark is None:
        return None
    where = f"@pytest.mark.{CRITERION_MARKER} of {node.nodeid}"
    return criterion_of_marker(mark.args, mark.kwargs, where), where


def sample_criteria(items: Sequence[pytest.Item], settings: Settings) -> dict[str, Criterion]:
    """The criterion of every sample of the items: a marker's, else the record's, else
    ilp.yaml's rules', else the run's. A sample is scored once per run, so two items that
    judge one sample by different criteria are a usage error."""
    chosen: dict[str, tuple[Criterion, str]] = {}
    for item in items:
        sample = sample_of(item)
        if sample is None:
            continue
        marked = marked_criterion(item)
        criterion, where = marked or (settings.criterion_for(sample), item.nodeid)
        earlier = chosen.get(sample.id)
        if earlier is not None and earlier[0] != criterion:
            raise pytest.UsageError(
                f"sample {sample.id} is judged by {earlier[0].spec} ({earlier[1]}) and by "
                f"{criterion.spec} ({where}) in one run, but each sample is scored once: give "
                f"both the same criterion, or select one of them (-k, -m)"
            )
        chosen[sample.id] = (criterion, where)
    return {sample_id: criterion for sample_id, (criterion, _) in chosen.items()}


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
