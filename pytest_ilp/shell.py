"""pytest hooks of an active pytest-ilp run: collection, scoring, reports. Wiring only.

The entry module (`plugin`) registers this module only when the settings name a
checkpoint (`activate`): a pytest run without one never imports it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.checks import running
from pytest_ilp.config.resolve import resolve
from pytest_ilp.core.datapaths import is_link_loop
from pytest_ilp.core.diagnosis import Diagnosis, diagnose
from pytest_ilp.core.errors import IlpUsageError, IlpWarning
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.signals import Signals
from pytest_ilp.core.thresholds import RUN_THRESHOLDS, check_names, valid_names
from pytest_ilp.core.verdicts import Verdict
from pytest_ilp.items import (
    IlpDataFile,
    IlpDatasetDir,
    budget_scopes,
    drop_second_paths,
    ilp_failure_text,
    is_must_learn,
    item_budgets,
    marked_criterion,
    parametrize_samples,
    sample_criteria,
    sample_of,
    select_shard,
)
from pytest_ilp.report.build import relative
from pytest_ilp.report.outputs import (
    closing,
    gate_exit_status,
    run_output,
    terminal_lines,
    write_empty_report,
    write_files,
)
from pytest_ilp.session import STATE_KEY, IlpSession, progress_reporter
from pytest_ilp.usage import usage_errors
from pytest_ilp.xdist import IlpXdist, is_worker, run_cache_of, send_to_controller


@pytest.hookimpl(trylast=True)
def pytest_ilp_diagnose(
    sample: Sample, verdict: Verdict, signals: Signals, config: pytest.Config
) -> Diagnosis:
    """The built-in rules, tried after any conftest's own."""
    return diagnose(sample, verdict, signals, config.stash[STATE_KEY].settings.diagnosis)


def activate(config: pytest.Config) -> bool:
    """Resolve the settings; when they name a checkpoint, start the run (its session in
    `config.stash`) and return True: the caller then registers this module's hooks."""
    resolved = resolve(config)
    if resolved is None:
        return False
    cache = getattr(config, "cache", None)
    cache_root = cache.mkdir("ilp") if cache is not None else None
    # Causes declared by plugins and the conftests loaded at startup are known by now.
    check_names(resolved.thresholds, RUN_THRESHOLDS, _budget_names(config))
    session = IlpSession.create(resolved, config.rootpath, cache_root, run_cache_of(config))
    config.stash[STATE_KEY] = session
    _add_data_to_args(config, session.data_files)
    config.pluginmanager.register(CollectionErrors(session), "ilp-collection-errors")
    if config.pluginmanager.hasplugin("xdist") and not is_worker(config):
        config.pluginmanager.register(IlpXdist(config), "ilp-xdist")
    return True


class CollectionErrors:
    """Remembers what failed to collect (on an xdist controller, what its workers report), so
    that the report names it and the gate cannot pass without its samples."""

    def __init__(self, session: IlpSession) -> None:
        self.session = session

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            lines = [line for line in report.longreprtext.splitlines() if line.strip()]
            message = lines[-1].strip() if lines else "collection failed"
            self.session.collection_errors[report.nodeid or "."] = message


def _add_data_to_args(config: pytest.Config, data_files: list[Path]) -> None:
    """Configured data joins the run even when it lies outside the collected folders, unless
    the command line names what to run (`pytest tests/test_x.py`, a node id) and the data
    comes from ilp.yaml or the ini file: then only what it names runs, as pytest's own rule."""
    explicit_args = config.args_source == pytest.Config.ArgsSource.ARGS
    if explicit_args and not config.option.ilp_data:
        return
    base = config.invocation_params.dir
    covered = [(base / arg.split("::")[0]).resolve() for arg in config.args]
    for path in data_files:
        if not any(path == c or c in path.parents for c in covered):
            if "::" in str(path):
                raise pytest.UsageError(
                    f"--ilp-data: {path}: pytest reads '::' in an argument as a test name, so "
                    "this path cannot join the run beside the tests named on the command line; "
                    "rename it (or its folder) without '::'"
                )
            config.args.append(str(path))


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if STATE_KEY not in config.stash:
        return None
    session = config.stash[STATE_KEY]
    root = config.rootpath
    data = ", ".join(relative(p, root) for p in session.data_files) or "none configured"
    cache = "on" if session.cache is not None else "off"
    return [
        f"ilp: checkpoint {relative(session.settings.checkpoint, root)}, "
        f"backend {session.settings.backend}, cache {cache}",
        f"ilp: data {data}",
    ]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not walk into a link back up the tree (`self -> .`, `up -> ..`): pytest would follow
    it until the path is too long, collecting the same files again at every level. Nor collect
    a link to a data file that is read under its own path."""
    session = config.stash.get(STATE_KEY, None)
    if session is None:
        return None
    if is_link_loop(collection_path):
        return True
    # A link to a data file read under its own path (a data folder) is that file again.
    if (
        collection_path.is_symlink()
        and collection_path.resolve() in session.data_files
        and collection_path.absolute() not in session.data_paths
    ):
        return True
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    session = parent.config.stash.get(STATE_KEY, None)
    if session is not None and file_path.resolve() in session.data_files:
        return IlpDataFile.from_parent(parent, path=file_path, nodeid=_nodeid(parent, file_path))
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    session = parent.config.stash.get(STATE_KEY, None)
    if session is not None and path.resolve() in session.data_files:
        return IlpDatasetDir.from_parent(parent, path=path, nodeid=_nodeid(parent, path))
    return None


def _nodeid(parent: pytest.Collector, path: Path) -> str | None:
    """Data outside the rootdir gets a relative node id ("../data/sft.jsonl"), not an empty one;
    None keeps pytest's own."""
    root = parent.config.rootpath
    if root in path.parents:
        return None
    return Path(relative(path, root)).as_posix()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    drop_second_paths(items)
    if state.settings.shard is not None:
        select_shard(config, items, state.settings.shard)


def _budget_names(config: pytest.Config) -> Sequence[str]:
    declared: list[Sequence[str] | None] = config.hook.pytest_ilp_causes(config=config)
    for names in declared:
        if names is not None and (
            isinstance(names, str) or not all(isinstance(n, str) for n in names)
        ):
            raise pytest.UsageError(
                f"a pytest_ilp_causes hook returned {names!r}: return a list of cause names "
                'such as ["arithmetic"], or None'
            )
    return valid_names(name for names in declared for name in names or ())


def _check_diagnosis(diagnosis: object, sample: Sample) -> None:
    """A conftest's pytest_ilp_diagnose must return a Diagnosis with a cause name (or None)."""
    if isinstance(diagnosis, Diagnosis) and isinstance(diagnosis.cause, str) and diagnosis.cause:
        return
    raise pytest.UsageError(
        f"a pytest_ilp_diagnose hook returned {diagnosis!r} for sample {sample.id}: return "
        "pytest_ilp.Diagnosis(cause=..., evidence=..., suggestion=...), or None to "
        "leave the sample to the built-in rules"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = metafunc.config.stash.get(STATE_KEY, None)
    if session is not None and "ilp_sample" in metafunc.fixturenames:
        # A bad ilp_threshold marker is a collection error of its test, as pytest's own
        # marker errors are (and the only kind of error an xdist worker reports cleanly).
        config = metafunc.config
        item_budgets(
            metafunc.definition,
            session.settings,
            _budget_names(config),
            pytest.Collector.CollectError,
        )
        try:
            marked_criterion(metafunc.definition)
        except (pytest.UsageError, IlpUsageError) as exc:
            raise pytest.Collector.CollectError(str(exc)) from None
        parametrize_samples(metafunc, session)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Score every selected sample in one batched pass, before the first test runs."""
    with usage_errors():
        _score(session)


def _score(session: pytest.Session) -> None:
    config = session.config
    state = config.stash.get(STATE_KEY, None)
    if state is None or config.option.collectonly:
        return
    if session.testsfailed and not config.option.continue_on_collection_errors:
        return
    scope = [(s, is_must_learn(item)) for item in session.items if (s := sample_of(item))]
    if not scope:
        return
    criteria = sample_criteria(session.items, state.settings)
    deselected = [item for item in state.deselected if sample_of(item) is not None]
    others = [(s, is_must_learn(item)) for item in deselected if (s := sample_of(item))]
    # `--lf` drops the other items of a data file while collecting, without deselecting them:
    # the configured data's samples count for the run's own budgets all the same.
    unlisted = state.unselected_data_samples({s.id for s, _ in [*scope, *others]})
    others += [(s, s.must_learn) for s in unlisted]
    # The deselected samples' criteria too: a cached verdict counts only if judged the same way.
    criteria = {**sample_criteria(deselected, state.settings), **criteria}
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def log(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"ilp: {message}")

    capture = config.pluginmanager.get_plugin("capturemanager")

    def diagnoser(sample: Sample, verdict: Verdict, signals: Signals) -> Diagnosis:
        diagnosis = config.hook.pytest_ilp_diagnose(
            sample=sample, verdict=verdict, signals=signals, config=config
        )
        _check_diagnosis(diagnosis, sample)
        return diagnosis  # type: ignore[no-any-return]

    # pytest records no warnings of its own between collection and the first test: catch the
    # ones scoring raises (a skipped signal) and hand them to its warnings summary.
    with (
        capture.global_and_fixture_disabled() if capture is not None else nullcontext(),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", IlpWarning)
        state.score(scope, log, progress_reporter(log), diagnoser, criteria, others)
    for record in caught:
        config.issue_config_time_warning(record.message, stacklevel=2)  # type: ignore[arg-type]
    names = _budget_names(config)
    outside = budget_scopes(deselected, state.settings, names) if deselected else {}
    state.apply_gate(
        budget_scopes(session.items, state.settings, names),
        {
            key: [*ids, *([s.id for s in unlisted] if key == "" else [])]
            for key, (_, ids) in {**outside, "": outside.get("", ({}, []))}.items()
        },
    )


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    """Remember the samples that `-k`, `-m`, `--lf` or a shard left out: those the cache
    knows still count towards the budgets, so the selection never changes an outcome."""
    if items:
        state = items[0].config.stash.get(STATE_KEY, None)
        if state is not None:
            state.deselected.extend(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with running(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.excinfo is not None:
        text = ilp_failure_text(item, call.excinfo.value)
        if text is not None:
            report.longrepr = text
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is None or state.final is None or is_worker(config):
        return
    terminalreporter.write_sep("=", "pytest-ilp")
    for line in terminal_lines(state.final, state.settings, config.rootpath, state.exitstatus or 0):
        terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True, tryfirst=True, specname="pytest_terminal_summary")
def pytest_terminal_summary_closing(
    terminalreporter: Any, config: pytest.Config
) -> Generator[None, None, None]:
    """After everything else of the summary (pytest's short test summary included), just
    before its final counts line: the verdict, the files written and what to try next.
    (pytest only reads hook functions named pytest_*; `specname` names the hook.)"""
    result = yield
    state = config.stash.get(STATE_KEY, None)
    if state is None or state.final is None or is_worker(config):
        return result
    lines = closing(
        state.final, state.settings, config.rootpath, state.written, config.invocation_params.args
    )
    if lines:
        terminalreporter.write_sep("=", "ilp gate")
        for line in lines:
            terminalreporter.write_line(line)
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Gather the run's output; a worker sends it to the controller, the controller (or a run
    without xdist) sets the exit status by the gate and writes the files."""
    config = session.config
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    state.final = output = run_output(state)
    if is_worker(config):
        if output is not None:
            send_to_controller(config, output)
        return
    if state.collection_errors and not config.option.continue_on_collection_errors:
        # xdist ends a run with collection errors as a failed one (exit 1); pytest alone
        # interrupts it (exit 2). Both are the same run cut short: say so alike.
        if session.exitstatus == pytest.ExitCode.TESTS_FAILED:
            session.exitstatus = pytest.ExitCode.INTERRUPTED
        return
    if session.exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
        # A run cut short (Ctrl-C, collection errors, a crash) must not replace the last
        # complete report or baseline with a partial one.
        return
    if output is None:
        state.written = write_empty_report(state, config.rootpath)
        return
    state.exitstatus = gate_exit_status(session, output)
    state.written = write_files(output, state.settings, config.rootpath, os.environ)
