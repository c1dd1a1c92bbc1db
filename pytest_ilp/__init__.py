"""pytest-ilp: test that a fine-tuned LLM learned its SFT data, and say why not.

Every SFT sample becomes a test that passes when greedy decoding from its prompt reproduces its
target. Without pytest, `pytest_ilp.check(checkpoint, data)` runs the same check and returns a
`Run` (verdicts, signals, diagnoses, the gate's decisions, the report).

pytest imports this package on every run of every project that has it installed (the entry
point is `pytest_ilp.plugin`), so the names below are imported when first used, and importing
it imports no torch, transformers or vllm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_ilp.checks import NotLearned, assert_learned
    from pytest_ilp.core.diagnosis import Diagnosis
    from pytest_ilp.core.errors import IlpDataError, IlpError, IlpUsageError, SampleProblem
    from pytest_ilp.core.run import Run, check
    from pytest_ilp.core.samples import Sample
    from pytest_ilp.core.signals import Signals
    from pytest_ilp.core.verdicts import Divergence, Verdict

__version__ = "0.1.0"

#: public name -> the module that defines it.
_WHERE = {
    "Diagnosis": "pytest_ilp.core.diagnosis",
    "Divergence": "pytest_ilp.core.verdicts",
    "IlpDataError": "pytest_ilp.core.errors",
    "IlpError": "pytest_ilp.core.errors",
    "IlpUsageError": "pytest_ilp.core.errors",
    "NotLearned": "pytest_ilp.checks",
    "Run": "pytest_ilp.core.run",
    "Sample": "pytest_ilp.core.samples",
    "SampleProblem": "pytest_ilp.core.errors",
    "Signals": "pytest_ilp.core.signals",
    "Verdict": "pytest_ilp.core.verdicts",
    "assert_learned": "pytest_ilp.checks",
    "check": "pytest_ilp.core.run",
}

__all__ = [
    "Diagnosis",
    "Divergence",
    "IlpDataError",
    "IlpError",
    "IlpUsageError",
    "NotLearned",
    "Run",
    "Sample",
    "SampleProblem",
    "Signals",
    "Verdict",
    "__version__",
    "assert_learned",
    "check",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pytest_ilp' has no attribute {name!r}")
    # Looked up in sys.modules each time, never cached here: an in-process pytest run
    # (pytester) drops the modules it imported, and `assert_learned` must be the one whose
    # running test the plugin's hooks set.
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
