"""The causes of incomplete learning (Xue et al. 2026), in one place: names, meaning, fix.

A conftest may report causes of its own through the `pytest_ilp_diagnose` hook; any name is
accepted there, and these are the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    name: str
    meaning: str
    suggestion: str


MISSING_KNOWLEDGE = "missing_knowledge"
KNOWLEDGE_CONFLICT = "knowledge_conflict"
DATA_INCONSISTENCY = "data_inconsistency"
FORGETTING = "forgetting"
UNDER_OPTIMIZATION = "under_optimization"
UNDIAGNOSED = "undiagnosed"

CAUSES = {
    cause.name: cause
    for cause in (
        Cause(
            MISSING_KNOWLEDGE,
            "the base model lacks a prerequisite fact",
            "add the missing knowledge before SFT (knowledge data or continued pre-training), "
            "or drop the sample if the model should not know it",
        ),
        Cause(
            KNOWLEDGE_CONFLICT,
            "the target contradicts what pre-training taught",
            "re-check the label; if it is right, teach it with retrieval or continued "
            "pre-training rather than more SFT epochs",
        ),
        Cause(
            DATA_INCONSISTENCY,
            "the SFT data contradicts itself",
            "deduplicate the near-identical prompts and resolve their conflicting targets",
        ),
        Cause(
            FORGETTING,
            "learned in an earlier stage of sequential fine-tuning, lost later",
            "replay a share of the earlier stage's data in the later stages, or lower their "
            "learning rate",
        ),
        Cause(
            UNDER_OPTIMIZATION,
            "a rare or complex pattern the optimizer never fit",
            "upsample the sample or its pattern, or train longer",
        ),
        Cause(
            UNDIAGNOSED,
            "no rule matched, or the inputs a rule needs were not given",
            "give the inputs the evidence names (--ilp-base, --ilp-history)",
        ),
    )
}
