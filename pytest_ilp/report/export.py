"""The remediation export (`--ilp-export=fix.jsonl`): the unlearned samples, ready to act on.

Each line is the sample's original record, every field kept (so the file can be trained on, or
filtered by cause and fed to the next fine-tuning run as it is), plus one field `ilp` with the
cause, the evidence, the suggested fix, the gate's decision and what the model produced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pytest_ilp.core.datafiles import read_records
from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.gate import GateResult
from pytest_ilp.core.samples import Sample
from pytest_ilp.report.build import SampleOutcome, location
from pytest_ilp.report.records import DivergenceRecord

#: the field added to each exported record.
FIELD = "ilp"


def remediation_records(
    outcomes: Sequence[SampleOutcome], gate: GateResult | None, root: Path
) -> list[dict[str, Any]]:
    """One record per unlearned sample, in scope order."""
    unlearned = [o for o in outcomes if o.unlearned]
    originals = original_records(o.sample for o in unlearned)
    records = []
    for outcome in unlearned:
        sample, verdict = outcome.sample, outcome.verdict
        assert verdict is not None
        record = dict(originals.get(sample.id) or record_of(sample))
        divergence = verdict.first_divergence
        decision = gate.decision(sample.id) if gate is not None else None
        diagnosis = outcome.diagnosis
        record[FIELD] = {
            "id": sample.id,
            "source": location(sample, root),
            "cause": diagnosis.cause if diagnosis else None,
            "causes": list(diagnosis.causes or (diagnosis.cause,)) if diagnosis else [],
            "evidence": diagnosis.evidence if diagnosis else None,
            "suggestion": diagnosis.suggestion if diagnosis else None,
            "gate": decision.outcome if decision else None,
            "gate_reason": decision.reason or None if decision else None,
            "must_learn": outcome.must_learn,
            "baseline": outcome.baseline,
            "produced": verdict.produced,
            "criterion": verdict.criterion,
            "criterion_figures": dict(verdict.figures),
            "first_divergence": DivergenceRecord.of(divergence).to_dict(probabilities=False)
            if divergence
            else None,
            "token_accuracy": verdict.token_accuracy,
            "nll": verdict.nll,
        }
        records.append(record)
    return records


def original_records(samples: Iterable[Sample]) -> dict[str, Any]:
    """The records the samples were read from, by sample id (each file read once)."""
    by_file: dict[Path, dict[int, str]] = {}
    for sample in samples:
        by_file.setdefault(sample.source, {})[sample.line] = sample.id
    found: dict[str, Any] = {}
    for path, wanted in by_file.items():
        try:
            for line, record in read_records(path):
                if line in wanted and isinstance(record, dict):
                    found[wanted[line]] = record
        except (IlpDataError, OSError):
            continue  # the file changed or vanished since: fall back on `record_of`
    return found


def record_of(sample: Sample) -> dict[str, Any]:
    """A trainable record rebuilt from the sample, when its original cannot be read again."""
    record: dict[str, Any] = {"id": sample.id}
    if sample.messages is not None:
        turns = [dict(m) for m in sample.messages]
        record["messages"] = [*turns, {"role": "assistant", "content": sample.target}]
    else:
        record.update(prompt=sample.prompt, completion=sample.target)
    return record
