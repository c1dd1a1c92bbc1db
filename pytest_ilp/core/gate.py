"""The CI gate: which unlearned samples fail the run, and which it tolerates.

All verdicts and causes exist before the first test runs, so the gate decides every sample up
front and each item only reports its decision. The rules, in order, for an unlearned sample:

1. a must-learn sample fails;
2. with `--ilp-strict`, every unlearned sample fails;
3. with a baseline, a sample unlearned there too is *known*: tolerated, and not counted;
4. otherwise the sample counts against the budgets of its scope, and is tolerated only when
   every budget that covers it holds: its cause's own budget (a cause without one has budget 0,
   unless `total` is set, which then bounds it alone), `total` (all counted samples), and
   `regressions` (counted samples that the baseline had learned).

A budget is a share of the samples in scope (a float in [0, 1]) or a count (an int). A scope is
the set of samples whose budgets come from the same place: the run's own budgets (command line,
ilp.yaml, ini), or one `ilp_threshold` marker's test function, class or module. It holds the
selected samples and the deselected ones whose verdicts are known from the cache (`Scope.others`),
so that `-k`, `-m` or `--lf` choose which samples run, never how their budgets come out.

Everything here is plain data in, plain data out: the plugin, the merge of shard reports and the
xdist controller all evaluate the gate with the same `evaluate`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_ilp.core.causes import CAUSES, UNDIAGNOSED
from pytest_ilp.core.thresholds import AGGREGATES, REGRESSIONS, TOTAL, Threshold

# How a sample compares with the baseline report.
KNOWN = "known"  # unlearned there too
REGRESSION = "regression"  # learned there, unlearned now
FIXED = "fixed"  # unlearned there, learned now

# The gate's decision on one sample.
PASSED = "passed"
TOLERATED = "tolerated"
FAILED = "failed"
INVALID = "invalid"


@dataclass(frozen=True)
class GateSample:
    """What the gate needs to know about one sample in scope."""

    id: str
    #: None when the sample could not be checked (invalid).
    learned: bool | None
    cause: str | None = None
    must_learn: bool = False
    #: KNOWN, REGRESSION, FIXED or None, against the baseline report.
    baseline: str | None = None

    @property
    def unlearned(self) -> bool:
        return self.learned is False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "learned": self.learned,
            "cause": self.cause,
            "must_learn": self.must_learn,
            "baseline": self.baseline,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateSample:
        return cls(
            id=data["id"],
            learned=data["learned"],
            cause=data.get("cause"),
            must_learn=bool(data.get("must_learn")),
            baseline=data.get("baseline"),
        )


@dataclass(frozen=True)
class Scope:
    """Samples whose budgets come from one place; `key` is "" for the run's own budgets, else
    the node id of what the `ilp_threshold` marker decorates.

    `others` are samples of the scope that the run did not select (`-k`, `-m`, `--lf`, a
    shard) but whose verdicts and causes are known from the cache: they count towards the
    budgets like the selected ones and get no decision, so that a sample's outcome does not
    change with the selection.
    """

    key: str
    budgets: Mapping[str, Threshold]
    sample_ids: tuple[str, ...]
    others: tuple[GateSample, ...] = ()

    @property
    def label(self) -> str:
        return "the run" if not self.key else self.key


@dataclass(frozen=True)
class Row:
    """One line of the gate table: a cause, `total` or `regressions`, within one scope."""

    name: str
    #: unlearned samples counted against the budget (known ones excluded).
    count: int
    #: samples in the scope.
    samples: int
    #: None: no budget of its own (a cause bounded by `total` alone, or no `total`).
    budget: Threshold | None
    #: the budget is the default 0 of a cause nobody gave a budget.
    default: bool = False
    #: unlearned samples of this cause that the baseline already had unlearned (not counted).
    known: int = 0

    @property
    def share(self) -> float:
        return self.count / self.samples if self.samples else 0.0

    @property
    def within(self) -> bool:
        return self.budget is None or self.budget.allows(self.count, self.samples)

    @property
    def status(self) -> str:
        if self.budget is None:
            return "(total)" if self.name not in AGGREGATES else "-"
        return "within" if self.within else "over"

    @property
    def budget_text(self) -> str:
        if self.budget is None:
            return "-"
        return f"{self.budget} (default)" if self.default else str(self.budget)

    def describe(self) -> str:
        """ "knowledge_conflict: 3 of 200 unlearned (1.5%), budget 2%": an item's reason."""
        what = "regressed" if self.name == REGRESSIONS else "unlearned"
        return (
            f"{self.name}: {self.count} of {self.samples} {what} ({self.share:.1%}), "
            f"budget {self.budget_text}"
        )

    def broken(self) -> str:
        """ "knowledge_conflict 5/200 (2.5%) > 2%": how the verdict line names a broken budget."""
        return f"{self.name} {self.count}/{self.samples} ({self.share:.1%}) > {self.budget_text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unlearned": self.count,
            "known": self.known,
            "share": self.share,
            "budget": self.budget.to_dict() if self.budget is not None else None,
            "default_budget": self.default,
            "status": self.status,
        }


@dataclass(frozen=True)
class Decision:
    """The gate's decision on one sample: PASSED, TOLERATED, FAILED or INVALID, and why."""

    outcome: str
    reason: str = ""

    @property
    def tolerated(self) -> bool:
        return self.outcome == TOLERATED


_SEVERITY = {PASSED: 0, TOLERATED: 1, FAILED: 2, INVALID: 3}


@dataclass(frozen=True)
class ScopeResult:
    scope: Scope
    rows: tuple[Row, ...]
    decisions: Mapping[str, Decision]

    @property
    def broken(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if not r.within)

    def to_dict(self) -> dict[str, Any]:
        record = {
            "scope": self.scope.key,
            "samples": len(self.scope.sample_ids) + len(self.scope.others),
            "budgets": {name: b.to_dict() for name, b in self.scope.budgets.items()},
            "rows": [row.to_dict() for row in self.rows],
        }
        if self.scope.others:
            record["outside_selection"] = [s.to_dict() for s in self.scope.others]
        return record


@dataclass(frozen=True)
class GateResult:
    """The decisions on every sample in scope, the gate table, and the baseline comparison."""

    scopes: tuple[ScopeResult, ...]
    strict: bool = False
    must_learn_unlearned: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()
    unlearned: tuple[str, ...] = ()
    known: tuple[str, ...] = ()
    regressions: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    #: the baseline compared against (as given), or None.
    baseline: str | None = None
    #: the node ids of data files (or test modules) that failed to collect under
    #: --continue-on-collection-errors: their samples were never checked, so the gate fails.
    unread: tuple[str, ...] = ()

    def decision(self, sample_id: str, scope_key: str | None = None) -> Decision:
        """The decision on a sample within one scope; with no scope, the worst over its scopes."""
        found = [
            s.decisions[sample_id]
            for s in self.scopes
            if sample_id in s.decisions and (scope_key is None or s.scope.key == scope_key)
        ]
        if not found:
            return Decision(PASSED)
        return max(found, key=lambda d: _SEVERITY[d.outcome])

    def row(self, scope_key: str, name: str) -> Row | None:
        """The table row of a cause (or `total`, `regressions`) in one scope."""
        for result in self.scopes:
            if result.scope.key == scope_key:
                return next((r for r in result.rows if r.name == name), None)
        return None

    def scopes_of(self, sample_id: str) -> list[str]:
        return [s.scope.key for s in self.scopes if sample_id in s.decisions]

    def count(self, outcome: str) -> int:
        ids = {i for s in self.scopes for i in s.decisions}
        return sum(1 for i in ids if self.decision(i).outcome == outcome)

    @property
    def passed(self) -> bool:
        return not self.unread and not any(
            d.outcome in (FAILED, INVALID) for s in self.scopes for d in s.decisions.values()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": verdict_line(self),
            "strict": self.strict,
            "baseline": self.baseline,
            "failed": self.count(FAILED),
            "tolerated": self.count(TOLERATED),
            "scopes": [s.to_dict() for s in self.scopes],
            "must_learn_unlearned": list(self.must_learn_unlearned),
            "invalid": list(self.invalid),
            "known": list(self.known),
            "regressions": list(self.regressions),
            "fixed": list(self.fixed),
            "unread": list(self.unread),
        }


def compare_with_baseline(learned: bool | None, baseline_learned: bool | None) -> str | None:
    """KNOWN, REGRESSION, FIXED, or None (no change, or not decidable)."""
    if learned is False and baseline_learned is False:
        return KNOWN
    if learned is False and baseline_learned is True:
        return REGRESSION
    if learned is True and baseline_learned is False:
        return FIXED
    return None


def evaluate(
    samples: Mapping[str, GateSample],
    scopes: Sequence[Scope],
    strict: bool = False,
    baseline: str | None = None,
) -> GateResult:
    """Decide every sample of every scope (see the module docstring)."""
    results = tuple(_evaluate_scope(scope, samples, strict, baseline) for scope in scopes)
    members = [samples[i] for i in dict.fromkeys(i for s in scopes for i in s.sample_ids)]
    return GateResult(
        scopes=results,
        strict=strict,
        must_learn_unlearned=tuple(s.id for s in members if s.must_learn and s.unlearned),
        invalid=tuple(s.id for s in members if s.learned is None),
        unlearned=tuple(s.id for s in members if s.unlearned),
        known=tuple(s.id for s in members if s.baseline == KNOWN),
        regressions=tuple(s.id for s in members if s.baseline == REGRESSION),
        fixed=tuple(s.id for s in members if s.baseline == FIXED),
        baseline=baseline,
    )


def _cause(sample: GateSample) -> str:
    return sample.cause or UNDIAGNOSED


def _evaluate_scope(
    scope: Scope, samples: Mapping[str, GateSample], strict: bool, baseline: str | None
) -> ScopeResult:
    members = [samples[i] for i in scope.sample_ids]
    # The budgets count the known samples outside the selection too; decisions are only made
    # on the selected ones.
    population = [*members, *(s for s in scope.others if s.id not in scope.sample_ids)]
    n = len(population)
    counted = [s for s in population if s.unlearned and s.baseline != KNOWN]
    known = [s for s in population if s.unlearned and s.baseline == KNOWN]
    per_cause = Counter(_cause(s) for s in counted)
    known_per_cause = Counter(_cause(s) for s in known)
    budgets = scope.budgets
    total = budgets.get(TOTAL)
    named = [c for c in budgets if c not in AGGREGATES]
    seen = {*per_cause, *known_per_cause, *named}
    causes = [c for c in CAUSES if c in seen] + sorted(c for c in seen if c not in CAUSES)

    rows: dict[str, Row] = {}
    for cause in causes:
        own = budgets.get(cause)
        budget = own if own is not None else (None if total is not None else Threshold(0))
        rows[cause] = Row(
            cause,
            per_cause[cause],
            n,
            budget,
            default=own is None and total is None,
            known=known_per_cause[cause],
        )
    total_row = Row(TOTAL, len(counted), n, total, known=len(known))
    regressions = [s for s in counted if s.baseline == REGRESSION]
    regression_row = (
        Row(REGRESSIONS, len(regressions), n, budgets.get(REGRESSIONS))
        if baseline is not None or REGRESSIONS in budgets
        else None
    )

    decisions: dict[str, Decision] = {}
    for sample in members:
        if sample.learned is None:
            decisions[sample.id] = Decision(INVALID, "the sample could not be checked")
        elif sample.learned:
            decisions[sample.id] = Decision(PASSED)
        elif sample.must_learn:
            decisions[sample.id] = Decision(FAILED, "must-learn sample not learned")
        elif strict:
            decisions[sample.id] = Decision(FAILED, "--ilp-strict: every unlearned sample fails")
        elif sample.baseline == KNOWN:
            decisions[sample.id] = Decision(
                TOLERATED, f"known: unlearned in the baseline too ({_cause(sample)})"
            )
        else:
            covering = [rows[_cause(sample)], total_row]
            if sample.baseline == REGRESSION and regression_row is not None:
                covering.append(regression_row)
            covering = [r for r in covering if r.budget is not None]
            over = [r for r in covering if not r.within]
            if over:
                reason = "over budget: " + "; ".join(r.describe() for r in over)
                decisions[sample.id] = Decision(FAILED, reason)
            else:
                reason = "; ".join(r.describe() for r in covering)
                decisions[sample.id] = Decision(TOLERATED, reason)
    table = [*rows.values(), total_row]
    if regression_row is not None:
        table.append(regression_row)
    return ScopeResult(scope, tuple(table), decisions)


def verdict_line(gate: GateResult) -> str:
    """The one line a CI log reader looks for; it says FAILED exactly when the gate fails."""
    if gate.passed:
        tolerated = gate.count(TOLERATED)
        if not gate.unlearned:
            return "ilp gate: PASSED — every sample learned"
        parts = []
        counted = tolerated - len(gate.known)
        if counted:
            parts.append(f"{counted} unlearned within budget")
        if gate.known:
            parts.append(f"{len(gate.known)} known from the baseline")
        return "ilp gate: PASSED — " + ", ".join(parts)
    reasons = []
    if gate.must_learn_unlearned:
        reasons.append(f"must-learn not learned: {len(gate.must_learn_unlearned)}")
    if gate.strict:
        strict_failures = len(gate.unlearned) - len(gate.must_learn_unlearned)
        if strict_failures:
            reasons.append(f"--ilp-strict: {strict_failures} unlearned")
    else:
        broken = []
        for result in gate.scopes:
            if result.broken:
                prefix = f"{result.scope.key}: " if result.scope.key else ""
                broken.append(prefix + ", ".join(row.broken() for row in result.broken))
        if broken:
            reasons.append("over budget: " + "; ".join(broken))
    if gate.invalid:
        reasons.append(f"invalid samples: {len(gate.invalid)}")
    if gate.unread:
        reasons.append(
            f"not collected, its samples unchecked: {', '.join(gate.unread[:3])}"
            + (f" and {len(gate.unread) - 3} more" if len(gate.unread) > 3 else "")
        )
    return "ilp gate: FAILED — " + "; ".join(reasons)
