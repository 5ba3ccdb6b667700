"""What every rule sees: the KB, the patient, and the resolved drugs (new items and current medications)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prescription_check.kb import KnowledgeBase
from prescription_check.schemas import Finding, NormalizedItem, Patient


@dataclass
class Ctx:
    kb: KnowledgeBase
    patient: Patient
    items: list[NormalizedItem]            # new items (resolved or not)
    current: list[NormalizedItem]          # current medications
    findings: list[Finding] = field(default_factory=list)

    def owners(self):
        """(label, ingredients, is_new, item) for every recognised drug, new first."""
        for it in self.items:
            if it.ingredients:
                yield it.written or "", it.ingredients, True, it
        for it in self.current:
            if it.ingredients:
                yield it.written or "", it.ingredients, False, it


DEFAULT_ACTIONS = {
    "contraindicated": "Do not dispense as written: contact the prescriber to change the drug.",
    "major": "Contact the prescriber before dispensing; change therapy or document justification and monitoring.",
    "moderate": "Review with the prescriber; adjust dose or monitor as advised.",
    "minor": "Note; counsel the patient if relevant.",
    "info": "For information.",
}
