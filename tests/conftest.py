from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from world import World, build_fake_world, build_world, greedy_generations

#: imported once per test process, so that pytester's in-process runs find them imported
#: (below): the plugin's modules that a run loads lazily (no model backend: those bring torch),
#: the near-duplicate search (datasketch, which brings scipy), hypothesis, and datasets.
PRELOADED = (
    "pytest_ilp.session",
    "pytest_ilp.shell",
    "pytest_ilp.core.pipeline",
    "pytest_ilp.core.scoring.compute",
    "pytest_ilp.report.html_report",
    "pytest_ilp.report.markdown",
    "datasketch",
    "hypothesis",
    "datasets",
)


def pytest_configure(config: pytest.Config) -> None:
    """Import `PRELOADED` once for the whole session, in each process that runs tests (not in
    xdist's controller, which runs none).

    pytester's in-process runs unload the modules first imported inside them, and the next
    run imports them again, and pytest rewrites the asserts of a plugin's modules on each
    import (pytest-ilp's, hypothesis's; with PYTHONDONTWRITEBYTECODE no rewritten bytecode is
    kept). pyarrow refuses to register datasets' types a second time."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the xdist controller
    for module in PRELOADED:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


#: test files whose tests train with TRL in the test process.
TRAINS_WITH_TRL = {"test_trainer_callback.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """TRL imported, before the first test that trains with it runs (8 s of imports, so only
    in the worker that runs such tests). Imported inside an in-process run instead, TRL's
    trainer modules (loaded lazily) would come back as new classes while `trl` keeps the old
    ones, and pickling the trainer's arguments fails ("not the same object as
    trl.trainer.sft_config.SFTConfig")."""
    if item.path.name in TRAINS_WITH_TRL:
        with contextlib.suppress(Exception):  # any failure shows in the tests that use TRL
            from trl import SFTConfig, SFTTrainer  # noqa: F401


#: Tests that one xdist worker runs, one after the other (a file, or one test of a file ->
#: its unit: the tests of one unit share a worker), so that a costly module fixture (a trained
#: adapter, SmolLM2's report, a subprocess run of the plugin) is built once, and vLLM, which the
#: tests of the "vllm" unit run in the worker's own process, is imported once (SmolLM2's other
#: tests, 80 s of CPU, are a unit of their own, for balance). Every other test goes to whichever
#: worker is free (`--dist loadgroup` in pyproject.toml). A table here and not `xdist_group`
#: marks: pytest-xdist 3.8 groups by a suffix it writes into each node id, which pytest 9.2 no
#: longer reads, so the marks are silently ignored (pytest-dev/pytest-xdist#1386).
ONE_WORKER = {
    "test_vllm.py": "vllm",
    "test_adapters.py": "vllm",
    "test_real_model.py::test_vllm_reaches_the_same_text_level_verdicts": "vllm",
    "test_real_model.py": "real_model",
    "test_html_report.py": "html_report",
    "test_gate.py": "gate",
    "test_trainer_callback.py": "trainer_callback",
    "test_benchmarks.py": "benchmarks",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`, with the units of `ONE_WORKER`."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    if not hasattr(LoadGroupScheduling, "_split_scope"):
        return None  # another xdist: its own loadgroup (slower here, never wrong)

    class Units(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path, _, rest = nodeid.partition("::")
            file, test = path.rsplit("/", 1)[-1], rest.split("[", 1)[0]
            unit = ONE_WORKER.get(f"{file}::{test}") or ONE_WORKER.get(file)
            return unit or str(super()._split_scope(nodeid))

    return Units(config, log)


#: a conftest for pytester runs whose `pytest_ilp_diagnose` hook gives the causes in
#: `PLANT.format(planted={sample id: cause})`, and leaves the other samples to the rules.
PLANT = """
from pytest_ilp.core.diagnosis import Diagnosis

PLANTED = {planted!r}


def pytest_ilp_diagnose(sample, verdict, signals):
    cause = PLANTED.get(sample.id)
    if cause is None:
        return None
    return Diagnosis(cause=cause, evidence="planted by the test", suggestion=f"fix the {{cause}}")
"""


@pytest.fixture(autouse=True)
def _no_github_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process pytest runs must not append to the step summary of the CI job running us."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(scope="session")
def _trained(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The tiny trained world, built once per test session (about 20 s of CPU): under xdist,
    by the first worker that needs it, in the folder all workers of the run share."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    with FileLock(root / "world.lock"):
        return build_world(root / "world")


@pytest.fixture(scope="session")
def _fake(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, dict[str, bool]]:
    return build_fake_world(tmp_path_factory.mktemp("fake-world"))


def _is_fake(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("fake_world") is not None


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest) -> World:
    """The tiny trained world; in a module marked `fake_world`, the same records on a fake
    checkpoint (`pytest_ilp.testing.fake`): verdicts from a table of answers, no model, so
    each in-process run costs milliseconds instead of loading and running a model."""
    if _is_fake(request):
        fake: tuple[World, dict[str, bool]] = request.getfixturevalue("_fake")
        return fake[0]
    trained: World = request.getfixturevalue("_trained")
    return trained


@pytest.fixture(scope="session")
def real_world(_trained: World) -> World:
    """The trained world, also in a module marked `fake_world`."""
    return _trained


def write_jsonl(path: Path, records: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def truth(request: pytest.FixtureRequest) -> dict[str, bool]:
    """Whether the world's checkpoint reproduces each record: see `trained_truth`; in a module
    marked `fake_world`, the fake checkpoint's, known by construction."""
    if _is_fake(request):
        fake: tuple[World, dict[str, bool]] = request.getfixturevalue("_fake")
        return fake[1]
    trained: dict[str, bool] = request.getfixturevalue("trained_truth")
    return trained


@pytest.fixture(scope="session")
def trained_truth(_trained: World) -> dict[str, bool]:
    """Ground truth for the first 100 raw records (50 never trained on, 50 trained on):
    does greedy `model.generate` from the prompt reproduce the completion, then EOS?"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_trained.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(_trained.checkpoint, dtype=torch.float32).eval()
    records = _trained.raw_records[:100]
    prompts = [tokenizer(r["prompt"])["input_ids"] for r in records]
    generated = greedy_generations(model, tokenizer, prompts, [40] * len(records))
    answers = {}
    for record, tokens in zip(records, generated):
        text = tokenizer.decode(tokens, skip_special_tokens=False)
        answers[record["id"]] = text.startswith(record["completion"] + tokenizer.eos_token)
    return answers


def assert_valid_report(document: Any) -> None:
    """The document follows the published JSON Schema of reports (pytest_ilp/report/schema.json)."""
    from jsonschema import Draft202012Validator

    from pytest_ilp.report.check import report_schema

    errors = sorted(Draft202012Validator(report_schema()).iter_errors(document), key=str)
    shown = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
    assert not errors, "\n".join(shown[:10])


def assert_round_trip(path: Path) -> None:
    """The report file parses into a `Report` that writes it again byte for byte (the typed
    model loses nothing), and it follows the published schema."""
    from pytest_ilp.report.check import read_report

    text = path.read_text(encoding="utf-8")
    assert_valid_report(json.loads(text))
    assert read_report(path).to_json() == text
