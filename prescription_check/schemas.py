"""Input and output schemas of the prescription checker (pydantic v2).

Inputs forbid unknown fields so that a misspelt field name is a 4xx naming it, never a silent pass.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# The one vocabulary of severities and finding categories (rules, KB build, review queue, API, evaluation).
Severity = Literal["contraindicated", "major", "moderate", "minor", "info"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}  # 0 = most severe

Category = Literal[
    "interaction", "predicted_interaction", "duplicate", "allergy", "dose", "pregnancy", "breastfeeding",
    "age", "renal", "hepatic", "contraindication", "unrecognised_drug", "unparsed_sig",
]
CATEGORIES: tuple[str, ...] = get_args(Category)

_Input = ConfigDict(extra="forbid", str_strip_whitespace=True)

DAYS_PER_YEAR = 365.25          # age in years -> days (the dose table's age bands are in days)
DAYS_PER_MONTH = DAYS_PER_YEAR / 12


def no_nul(value: str) -> str:
    """Refuse NUL characters: no database text column can hold them (PostgreSQL rejects the whole row)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


Text = Annotated[str, AfterValidator(no_nul)]
"""A free-text input field: any string without NUL characters."""


class Patient(BaseModel):
    model_config = _Input

    age_years: float | None = Field(default=None, ge=0, le=130)
    age_months: float | None = Field(default=None, ge=0, le=1560,
                                     description="age in months (infants); finer than age_years")
    age_days: float | None = Field(default=None, ge=0, le=47500,
                                   description="age in days (neonates: 0-27); the finest age field")
    sex: Literal["female", "male", "other"] | None = None
    weight_kg: float | None = Field(default=None, gt=0, le=500)
    pregnant: bool | None = None
    trimester: Literal[1, 2, 3] | None = None
    breastfeeding: bool | None = None
    allergies: list[Text] = Field(default_factory=list, max_length=100)
    conditions: list[Text] = Field(default_factory=list, max_length=200)
    egfr: float | None = Field(default=None, ge=0, le=250, description="mL/min/1.73m2")
    crcl: float | None = Field(default=None, ge=0, le=250, description="Creatinine clearance, mL/min")
    hepatic_impairment: Literal["none", "mild", "moderate", "severe"] | None = None
    current_medications: list[Text] = Field(default_factory=list, max_length=100)

    @field_validator("age_months", "age_days")
    @classmethod
    def _ages_agree(cls, value: float | None, info: ValidationInfo) -> float | None:
        """Age may be given in years, months and/or days; when several are given they must describe the same
        age (completed units, a few days' tolerance for month lengths), else a 422 names the finer field."""
        if value is None:
            return value
        years_given, months_given = info.data.get("age_years"), info.data.get("age_months")
        if info.field_name == "age_days" and months_given is not None:
            lo = int(months_given) * DAYS_PER_MONTH - 3
            hi = (int(months_given) + 1) * DAYS_PER_MONTH + 3
            if not lo <= value < hi:
                raise ValueError(f"age_days {value:g} contradicts age_months {months_given:g} "
                                 f"(expected {max(lo, 0):.0f}-{hi:.0f} days)")
        if years_given is not None:
            years = value / (DAYS_PER_YEAR if info.field_name == "age_days" else 12.0)
            tol = 3 / DAYS_PER_YEAR
            if not int(years_given) - tol <= years < int(years_given) + 1 + tol:
                raise ValueError(f"{info.field_name} {value:g} ({years:.2f} years) contradicts age_years "
                                 f"{years_given:g}")
        return value

    def age_in_days(self) -> float | None:
        """The patient's age in days from the finest field given (days > months > years), or None."""
        if self.age_days is not None:
            return float(self.age_days)
        if self.age_months is not None:
            return self.age_months * DAYS_PER_MONTH
        if self.age_years is not None:
            return self.age_years * DAYS_PER_YEAR
        return None

    def age_in_years(self) -> float | None:
        """``age_years`` when given, else the finer field converted (the age rules and the dose rule use it)."""
        if self.age_years is not None:
            return self.age_years
        days = self.age_in_days()
        return None if days is None else days / DAYS_PER_YEAR

    @field_validator("allergies", "conditions", "current_medications")
    @classmethod
    def _no_blank(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            if len(item) > 300:
                raise ValueError("entries must be at most 300 characters")
            if item.strip():
                out.append(item.strip())
        return out


class PrescriptionItem(BaseModel):
    model_config = _Input

    drug: Text | None = Field(default=None, max_length=300)
    dose: float | None = Field(default=None, gt=0, le=1_000_000)
    unit: Text | None = Field(default=None, max_length=40)
    strength_mg_per_ml: float | None = Field(default=None, gt=0, le=100_000)
    route: Text | None = Field(default=None, max_length=40)
    frequency: Text | None = Field(default=None, max_length=80)
    duration_days: float | None = Field(default=None, gt=0, le=3650)
    prn: bool = False
    sig: Text | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _drug_or_sig(self) -> "PrescriptionItem":
        if not (self.drug and self.drug.strip()) and not (self.sig and self.sig.strip()):
            raise ValueError("each item needs 'drug' or 'sig'")
        return self


class Prescription(BaseModel):
    model_config = _Input

    id: Text | None = Field(default=None, max_length=200)
    patient: Patient = Field(default_factory=Patient)
    items: list[PrescriptionItem] = Field(min_length=1, max_length=50)
    prescriber_id: Text | None = Field(default=None, max_length=200)


class Finding(BaseModel):
    rule_id: str
    category: Category
    severity: Severity
    drugs: list[str]
    message: str
    evidence: dict = Field(default_factory=dict)
    source: str = ""
    action: str = ""
    predicted: bool = False
    probability: float | None = None
    tier: Literal["info", "counsel", "review", "block"] | None = Field(
        default=None, description="block / review (holds the prescription) / counsel (a counselling note on the "
        "answer) / info; set by the verdict policy (prescription_check.tiers)")
    management: dict | None = Field(
        default=None, description="the cited management classification that made this finding a counselling note")


class NormalizedItem(BaseModel):
    index: int
    written: str | None
    ingredients: list[str] = Field(default_factory=list)
    atc_codes: list[str] = Field(default_factory=list)
    match: str | None = None  # exact | alias | salt | combination | fuzzy | None
    dose: float | None = None
    unit: str | None = None
    dose_mg: float | None = None
    frequency: str | None = None
    frequency_per_day: float | None = None
    daily_mg: float | None = None
    route: str | None = None
    duration_days: float | None = None
    prn: bool = False
    strengths_mg: dict[str, float] = Field(default_factory=dict)
    ingredient_dose_mg: dict[str, float] = Field(default_factory=dict, description="single dose per ingredient")
    ingredient_daily_mg: dict[str, float] = Field(default_factory=dict)
    from_sig: bool = False


class CounsellingNote(BaseModel):
    """A finding whose management is counselling or routine monitoring: given to the patient, not a review."""

    rule_id: str
    category: Category
    severity: Severity
    drugs: list[str]
    note: str
    management_class: str
    source: str = ""


class CheckResult(BaseModel):
    verdict: Literal["pass", "review", "block"]
    findings: list[Finding]
    kb_version: str
    model_version: str | None = None
    model_status: str = "ok"
    items: list[NormalizedItem] = Field(default_factory=list)
    current_medications: list[NormalizedItem] = Field(default_factory=list)
    counselling_notes: list[CounsellingNote] = Field(default_factory=list)
    tier_policy: str | None = Field(default=None, description="name and version of the queue settings applied")


_ICD10 = re.compile(r"^[A-TV-Z][0-9][0-9AB](\.?[0-9A-TV-Z]{1,4})?$", re.I)


def looks_like_icd10(text: str) -> bool:
    return bool(_ICD10.match(text.strip()))
