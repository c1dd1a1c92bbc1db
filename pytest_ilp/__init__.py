"""pytest-ilp: test that a fine-tuned LLM learned its SFT data, and say why not.

Every SFT sample becomes a test that passes when greedy decoding from its prompt reproduces its
target. This package is loaded by pytest on every run (entry point `pytest_ilp.plugin`), so it
imports no torch, transformers or vllm; the model runtimes load only when scoring starts.
"""

from __future__ import annotations

from pytest_ilp.checks import assert_learned
from pytest_ilp.core.errors import NotLearned
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.verdicts import Divergence, Verdict

__version__ = "0.1.0"

__all__ = ["Divergence", "NotLearned", "Sample", "Verdict", "__version__", "assert_learned"]
