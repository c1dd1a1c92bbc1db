"""The markers pytest-ilp registers, with the lines `pytest --markers` shows.

Registered by the entry module on every run (with or without a checkpoint), so that
`--strict-markers` accepts them: this module imports nothing.
"""

from __future__ import annotations

THRESHOLD_MARKER = "ilp_threshold"
#: the registration line (`pytest --markers`), with the marker's signature.
THRESHOLD_MARKER_LINE = (
    "ilp_threshold(**budgets): budgets of unlearned samples for the samples of this test "
    "function, class or module: cause=share (a float in [0, 1]) or cause=count (an int), and "
    "total= and regressions=; they win over --ilp-threshold, ilp.yaml and the ini file"
)


CRITERION_MARKER = "ilp_criterion"
#: the registration line (`pytest --markers`), with the marker's signature.
CRITERION_MARKER_LINE = (
    "ilp_criterion(name, value=None, **params): judge the samples of this test by this "
    "criterion, over the record's, ilp.yaml's and the command line's: "
    "ilp_criterion('token_accuracy', 0.9), ilp_criterion('sampled', n=5, temperature=0.7), "
    "ilp_criterion(nll=1.5), ilp_criterion('choice', 'sum')"
)


MARKERS = (
    "ilp: a pytest-ilp sample test (set on every sample item)",
    "must_learn: the sample(s) of this test must be learned; an unlearned one always fails",
    "ilp_dataset(*paths): parametrize this test's ilp_sample fixture over the samples of these "
    "data files or folders (relative to the test file)",
    THRESHOLD_MARKER_LINE,
    CRITERION_MARKER_LINE,
)
