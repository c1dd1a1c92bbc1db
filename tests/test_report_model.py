"""The typed report model: one writer, one parser, the summary computed from the records, the
gate carried as evaluated.

Real reports (a gated run, a run against a baseline, an updated baseline, shards and their
merge, a diagnosed run with chat turns, the trainer callback's) are round-tripped where the
suite writes them (`conftest.assert_round_trip`); here, generated reports and broken files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ilp.core.causes import CAUSES
from pytest_ilp.core.gate import PASSED, GateSample, Scope, evaluate
from pytest_ilp.core.thresholds import Threshold
from pytest_ilp.report.check import ReportError, parse_report, read_report
from pytest_ilp.report.model import CollectionError, Report, summarize
from pytest_ilp.report.records import (
    DivergenceRecord,
    SampleGate,
    SampleRecord,
    UnlearnedDetail,
)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
probability = st.floats(min_value=0.0, max_value=1.0)
text = st.text(max_size=12)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), finite, text)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
figures = st.dictionaries(st.text(min_size=1, max_size=8), json_value, max_size=3)
causes = st.sampled_from([*CAUSES, "my_own_cause"])
divergences = st.none() | st.builds(
    DivergenceRecord,
    st.integers(0, 50),
    text,
    text,
    st.none() | probability,
    st.none() | probability,
)
turns = st.lists(st.fixed_dictionaries({"role": text, "content": text}), max_size=2).map(tuple)
details = st.builds(
    UnlearnedDetail,
    st.none() | text,
    st.none() | turns,
    text,
    st.none() | st.lists(st.tuples(text, probability), max_size=3).map(tuple),
)


@st.composite
def sample_records(draw: Any, sample_id: str) -> SampleRecord:
    learned = draw(st.sampled_from([True, False, None]))
    if learned is None:
        return SampleRecord(id=sample_id, learned=None, error=draw(text), source="d.jsonl:1")
    unlearned = learned is False
    diagnosed = unlearned and draw(st.booleans())
    cause = draw(causes) if diagnosed else None
    return SampleRecord(
        id=sample_id,
        learned=learned,
        source=f"data.jsonl:{draw(st.integers(1, 999))}",
        stage=draw(st.none() | text),
        tags=tuple(draw(st.lists(text, max_size=2))),
        must_learn=draw(st.booleans()),
        criterion=draw(st.sampled_from([None, "exact", "nll:0.5", "choice:mean"])),
        criterion_figures=draw(st.none() | figures),
        token_accuracy=draw(probability),
        target_tokens=draw(st.integers(0, 50)),
        first_divergence=draw(divergences),
        nll=draw(st.none() | finite),
        margin=draw(st.none() | finite),
        fragile=draw(st.booleans()),
        retokenized=draw(st.booleans()),
        produced=draw(st.none() | text),
        cause=cause,
        causes=(cause,) if cause else (),
        evidence="why" if diagnosed else None,
        suggestion="what to do" if diagnosed else None,
        signals=draw(st.none() | figures) if diagnosed else None,
        detail=draw(details) if unlearned else None,
        confidence=draw(st.sampled_from([None, "strong", "weak"])) if diagnosed else None,
        figures=draw(figures) if diagnosed else None,
    )


@st.composite
def reports(draw: Any) -> Report:
    """A report with a gate evaluated over its records, as a run builds one."""
    count = draw(st.integers(0, 8))
    records = [draw(sample_records(f"s{n}")) for n in range(count)]
    budgets = draw(
        st.dictionaries(
            st.sampled_from([*CAUSES, "total"]),
            st.integers(0, 3).map(Threshold) | st.sampled_from([0.0, 0.25, 1.0]).map(Threshold),
            max_size=3,
        )
    )
    gate = evaluate(
        {r.id: GateSample(r.id, r.learned, r.cause, r.must_learn) for r in records},
        [Scope("", budgets, tuple(r.id for r in records))],
        strict=draw(st.booleans()),
    )
    decided = tuple(
        SampleRecord(
            **{
                **vars(record),
                "gate": SampleGate(
                    gate.decision(record.id).outcome,
                    gate.decision(record.id).reason or None,
                    ("",),
                    None,
                ),
            }
        )
        for record in records
    )
    return Report(
        checkpoint=draw(text),
        backend="fake cpu float32",
        fragile_margin=0.1,
        samples=decided,
        shard=draw(st.none() | st.just("1/2")),
        collection_errors=tuple(draw(st.lists(st.builds(CollectionError, text, text), max_size=1))),
        gate=gate,
    )


@settings(max_examples=30, deadline=None)
@given(reports())
def test_a_report_written_and_parsed_back_is_the_same_report(report: Report) -> None:
    text = report.to_json()
    parsed = parse_report(json.loads(text))  # checked against the schema, too
    assert parsed.samples == report.samples
    assert parsed.summary == report.summary == summarize(report.samples)
    assert parsed.to_json() == text


def small_report() -> Report:
    records = [
        SampleRecord(id="a", learned=True, source="d.jsonl:1"),
        SampleRecord(id="b", learned=False, source="d.jsonl:2", cause="knowledge_conflict"),
        SampleRecord(id="c", learned=False, source="d.jsonl:3", cause="data_inconsistency"),
    ]
    gate = evaluate(
        {r.id: r.gate_sample() for r in records},
        [Scope("", {"knowledge_conflict": Threshold(1)}, ("a", "b", "c"))],
    )
    return Report(
        checkpoint="/ckpt",
        backend="fake cpu float32",
        fragile_margin=0.1,
        samples=tuple(
            SampleRecord(
                **{
                    **vars(r),
                    "gate": SampleGate(
                        gate.decision(r.id).outcome, gate.decision(r.id).reason or None, ("",), None
                    ),
                }
            )
            for r in records
        ),
        gate=gate,
    )


def test_the_gate_is_read_as_written_and_not_evaluated_again() -> None:
    report = small_report()
    assert report.gate is not None and not report.gate.passed  # c: no budget for its cause
    document = json.loads(report.to_json())
    # Edit the causes behind the decisions: a reader must not decide again from them.
    for record in document["samples"]:
        record["cause"] = "knowledge_conflict" if record["learned"] is False else None
    parsed = parse_report(document)
    assert parsed.gate is not None
    assert parsed.gate.to_dict() == report.gate.to_dict()
    assert not parsed.gate.passed
    assert parsed.gate.decision("a").outcome == PASSED
    # The summary, though, is always the records': computed, never read.
    assert parsed.summary.causes == {"knowledge_conflict": 2}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("backend"), "not a whole pytest-ilp report (no backend)"),
        (
            lambda d: d["samples"][1].update(learned="no"),
            "samples[1] (b): `learned` must be true, false or null",
        ),
        (
            lambda d: d["samples"][2].update(gate="maybe"),
            'samples[2] (c): `gate` must be "passed", "tolerated", "failed" or "invalid"',
        ),
        (lambda d: d["gate"].update(strict="yes"), "`gate.strict` must be true, false"),
        (lambda d: d["samples"][2].update(id="a"), "samples[2]: sample id 'a' appears twice"),
        (lambda d: d.update(schema=7), "report schema 7, but this pytest-ilp reads schemas 1, 2"),
    ],
)
def test_a_broken_report_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, change: Any, message: str
) -> None:
    document = json.loads(small_report().to_json())
    change(document)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ReportError) as refused:
        read_report(path)
    assert str(refused.value).startswith(f"{path}: {message}")


def test_a_file_that_is_not_json_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "torn.json"
    path.write_text('{"schema": 2, "samples": [', encoding="utf-8")
    with pytest.raises(ReportError, match=f"^{path}: not a JSON report"):
        read_report(path)
