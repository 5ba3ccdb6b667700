"""Prescription safety checker: cited knowledge base, drug normalisation, sig parsing, explainable findings.

    from prescription_check import Checker, Prescription
    result = Checker.load(kb_path).check(Prescription.model_validate(payload))
"""

from prescription_check.engine import Checker, severity_rank
from prescription_check.schemas import (
           CheckResult,
           Finding,
           NormalizedItem,
           Patient,
           Prescription,
           PrescriptionItem,
)

__all__ = ["Checker", "CheckResult", "Finding", "NormalizedItem", "Patient", "Prescription", "PrescriptionItem",
           "severity_rank"]
