"""FHIR R4 -> the checker's ``Prescription``: the interface adapter of the CDS Hooks services.

FHIR resources are parsed with ``fhir.resources`` (pydantic v2), through its ``R4B`` models: R4B changed no element
that is read here (MedicationRequest, Dosage, Patient, AllergyIntolerance, Condition, Observation, Bundle), and
``fhir.resources`` 8 carries no separate R4 package.  A resource that does not parse is a :class:`MappingError`
naming its path (``context.draftOrders.entry[1].resource.dosageInstruction[0].timing``), which the route answers
with a 400 OperationOutcome.  What parses but cannot be checked (a medication coded in a system the knowledge base
cannot map and without a readable name, a unit that cannot be converted, a renal-dosed drug without a renal
function result ...) becomes an :class:`Unchecked` note, which ``serving.cds_hooks`` turns into an info card: an
order is never reported as checked when it was not.

The mapping table is docs/cds-hooks.md.  The domain packages never import ``fhir.resources``; this module only
builds their plain ``Prescription``.

Tolerated deviations from R4 (both in the CDS Hooks specification's own published examples, so sandboxes send
them): ``Dosage.doseAndRate`` given as one object instead of an array, ``Dosage.doseQuantity`` at the STU3 place
(moved into ``doseAndRate``), and a ``draftOrders`` Bundle without ``type`` (read as ``collection``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from prescription_check.kb import KnowledgeBase
from prescription_check.normalize import COUNT_UNITS, MASS_UNITS_MG, VOLUME_UNITS_ML, frequency_per_day
from prescription_check.schemas import Prescription
from prescription_check.sig_parser import ROUTES

# --- code systems ---------------------------------------------------------------------------------------------
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm",
                           "http://hl7.org/fhir/sid/icd-10-de", "http://hl7.org/fhir/sid/icd-10-nl"})
GTS_ABBREVIATION = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"

# LOINC codes read from Observations (https://loinc.org/<code>/)
WEIGHT_CODES = frozenset({"29463-7", "3141-9"})            # Body weight; Body weight Measured
EGFR_CODES = frozenset({"33914-3", "62238-1", "98979-8", "48642-3", "48643-1", "50044-7", "69405-9"})
CRCL_CODES = frozenset({"2164-2"})                         # Creatinine renal clearance (24 h urine + serum/plasma)
CREATININE_CODES = frozenset({"2160-0", "38483-4"})        # Creatinine [Mass/volume] in Serum/Plasma; in Blood
PREGNANCY_CODES = frozenset({"82810-3", "11449-6"})        # Pregnancy status; Pregnancy status - Reported
# answers: SNOMED CT 77386006 Pregnant / 60001007 Not pregnant; LOINC answers LA15173-0 / LA26683-5
PREGNANT_ANSWERS = frozenset({"77386006", "LA15173-0"})
NOT_PREGNANT_ANSWERS = frozenset({"60001007", "LA26683-5"})
PREGNANCY_CONDITION_CODES = frozenset({"77386006"})        # SNOMED CT: Pregnancy (finding)

# UCUM code (or printed unit) -> kilograms
_WEIGHT_KG = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237, "lbs": 0.45359237}
_EGFR_UNITS = {"ml/min/{1.73_m2}", "ml/min/1.73m2", "ml/min/1.73 m2", "ml/min/1.73_m2", "ml/min/{1.73m2}",
               "ml/min/1.73m^2", "ml/min per 1.73 m2"}
_PER_MIN = {"ml/min": 1.0, "ml/s": 60.0, "l/h": 1000.0 / 60.0}
# UCUM dose units (and common printed ones) -> the checker's unit words
_UCUM_DOSE = {
    "mg": "mg", "g": "g", "ug": "mcg", "mcg": "mcg", "ng": "ng", "ml": "mL", "l": "l",
    "{tbl}": "tab", "{tablet}": "tab", "{tablets}": "tab", "{tab}": "tab", "tab": "tab",
    "{capsule}": "cap", "{capsules}": "cap", "{cap}": "cap", "cap": "cap",
    "{puff}": "puff", "{puffs}": "puff", "[drp]": "drop", "{drop}": "drop", "{drops}": "drop",
    "[iu]": "units", "[iu]/{dose}": "units", "u": "units", "{unit}": "units", "{patch}": "patch",
    "{suppository}": "supp", "{sachet}": "sachet", "meq": "mEq", "mmol": "mmol", "{spray}": "spray",
}
# FHIR Timing periodUnit -> days
_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}
_DURATION_DAYS = {"d": 1.0, "day": 1.0, "days": 1.0, "wk": 7.0, "week": 7.0, "weeks": 7.0, "mo": 30.0,
                  "month": 30.0, "months": 30.0, "h": 1 / 24, "a": 365.0}
# GTS abbreviations the checker's frequency parser does not read by themselves
_GTS_EXTRA = {"am": "daily", "pm": "daily", "wk": "weekly", "mo": "monthly"}

MAX_ITEMS = 50  # Prescription.items
LIST_CAPS = {"allergies": 100, "conditions": 200, "current_medications": 100}


class MappingError(ValueError):
    """Input that cannot be read at all: answered with 400 and an OperationOutcome naming ``path``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass
class Unchecked:
    """Something the service could not check; becomes an info card (never a silent pass)."""

    rule_id: str
    summary: str
    detail: str
    path: str
    order_ids: list[str] = field(default_factory=list)
    drugs: list[str] = field(default_factory=list)


@dataclass
class DraftOrder:
    resource_id: str                      # "MedicationRequest/<id>"
    raw: dict[str, Any]                   # the resource as sent (after the tolerated-deviation fixes)
    path: str
    item_index: int | None = None         # index in Prescription.items; None when the order could not be mapped
    name: str | None = None
    selected: bool = True
    dose_value: float | None = None
    dose_unit: str | None = None          # the checker's unit word
    dose_ucum: str | None = None
    mass_dose: bool = False               # dose in mg/g/mcg: a dose-limit suggestion can rewrite it
    item: dict[str, Any] | None = None    # the PrescriptionItem fields


@dataclass
class MappedRequest:
    prescription: Prescription | None
    orders: list[DraftOrder]
    unchecked: list[Unchecked]
    inputs: dict[str, Any] = field(default_factory=dict)  # what was read (for the card detail and the audit)

    def order_for_item(self, index: int) -> DraftOrder | None:
        return next((o for o in self.orders if o.item_index == index), None)


# --- parsing helpers --------------------------------------------------------------------------------------------


def fhir_path(prefix: str, loc: tuple) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _parse(model, data: Any, path: str):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise MappingError(fhir_path(path, tuple(err.get("loc", ()))), msg) from None
    except (TypeError, ValueError) as exc:
        raise MappingError(path, f"not a valid FHIR resource: {exc}") from None


def _fix_dosage(resource: dict) -> dict:
    """The tolerated deviations of a MedicationRequest's Dosage (see the module docstring)."""
    dosages = resource.get("dosageInstruction")
    if not isinstance(dosages, list) or not any(
            isinstance(d, dict) and (isinstance(d.get("doseAndRate"), dict) or "doseQuantity" in d or "doseRange" in d)
            for d in dosages):
        return resource
    resource = copy.deepcopy(resource)
    for dosage in resource["dosageInstruction"]:
        if not isinstance(dosage, dict):
            continue
        if isinstance(dosage.get("doseAndRate"), dict):
            dosage["doseAndRate"] = [dosage["doseAndRate"]]
        stu3 = {k: dosage.pop(k) for k in ("doseQuantity", "doseRange") if k in dosage}
        if stu3 and not dosage.get("doseAndRate"):
            dosage["doseAndRate"] = [stu3]
    return resource


READ_TYPES = frozenset({"MedicationRequest", "Medication", "Patient", "AllergyIntolerance", "Condition",
                        "Observation"})


def _parse_one(value: dict, path: str):
    rtype = value.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise MappingError(f"{path}.resourceType", "missing")
    try:
        model = get_fhir_model_class(rtype)
    except (ValueError, KeyError):
        raise MappingError(f"{path}.resourceType", f"{rtype[:60]!r} is not a FHIR R4 resource type") from None
    raw = _fix_dosage(value) if rtype == "MedicationRequest" else value
    return _parse(model, raw, path), raw


def parse_resources(value: Any, path: str, *, bundle_default_type: bool = False) -> list[tuple[str, Any, dict]]:
    """A Bundle or a single resource -> [(path, parsed resource, raw dict)], for the resource types this module
    reads (``READ_TYPES``); other resources (a NutritionOrder among the draft orders, an Encounter) are skipped
    unparsed: they are not a prescription check's business, and an error in them must not block the check."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise MappingError(path, "must be a FHIR resource or Bundle (a JSON object)")
    rtype = value.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise MappingError(f"{path}.resourceType", "missing")
    if rtype != "Bundle":
        if rtype not in READ_TYPES:
            try:
                get_fhir_model_class(rtype)
            except (ValueError, KeyError):
                raise MappingError(f"{path}.resourceType", f"{rtype[:60]!r} is not a FHIR R4 resource type") \
                    from None
            return []
        parsed, raw = _parse_one(value, path)
        return [(path, parsed, raw)]
    entries = value.get("entry")
    if entries is not None and not isinstance(entries, list):
        raise MappingError(f"{path}.entry", "must be an array")
    shell = {k: v for k, v in value.items() if k != "entry"}
    if bundle_default_type and "type" not in shell:
        shell["type"] = "collection"
    _parse(Bundle, shell, path)
    out = []
    for i, entry in enumerate(entries or []):
        where = f"{path}.entry[{i}]"
        if not isinstance(entry, dict):
            raise MappingError(where, "must be an object")
        resource = entry.get("resource")
        if resource is None:
            continue
        if not isinstance(resource, dict):
            raise MappingError(f"{where}.resource", "must be a FHIR resource (a JSON object)")
        if resource.get("resourceType") not in READ_TYPES:
            if not isinstance(resource.get("resourceType"), str):
                raise MappingError(f"{where}.resource.resourceType", "missing")
            continue
        parsed, raw = _parse_one(resource, f"{where}.resource")
        out.append((f"{where}.resource", parsed, raw))
    return out


# --- small readers -------------------------------------------------------------------------------------------


def _num(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        value = float(value)
    return float(value) if isinstance(value, (int, float)) else None


def _codings(cc) -> list:
    return list(getattr(cc, "coding", None) or []) if cc is not None else []


def _cc_texts(cc) -> list[str]:
    """CodeableConcept.text first, then every coding's display."""
    out = []
    if cc is None:
        return out
    if getattr(cc, "text", None):
        out.append(cc.text.strip())
    for c in _codings(cc):
        if c.display and c.display.strip() not in out:
            out.append(c.display.strip())
    return [t for t in out if t]


def _has_code(cc, system: str | None, codes: frozenset[str]) -> bool:
    return any((system is None or c.system == system) and c.code in codes for c in _codings(cc))


def _code_label(cc) -> str:
    parts = [f"{c.system or '?'}|{c.code or '?'}" for c in _codings(cc)]
    return ", ".join(parts) or "no coding"


def _status(cc) -> set[str]:
    return {c.code for c in _codings(cc) if c.code}


_BRACKETS = re.compile(r"\[[^\]]*\]|\{[^}]*\}")
_HOURS = re.compile(r"\b\d+\s*hr\b", re.I)
_PER_ML = re.compile(r"(\d+(?:\.\d+)?)\s*(mg|mcg|g)\s*/\s*ml\b", re.I)


def clean_drug_text(text: str) -> tuple[str, float | None]:
    """An RxNorm-style display ('Atorvastatin 10 MG Oral Tablet [Lipitor]', 'Amoxicillin 120 MG/ML /
    clavulanate potassium 8.58 MG/ML Oral Suspension') -> (name the normaliser reads, mg/mL of the first
    ingredient or None)."""
    per_ml = None
    m = _PER_ML.search(text)
    if m:
        per_ml = float(m.group(1)) * MASS_UNITS_MG[m.group(2).lower()]
    out = _PER_ML.sub(" ", _HOURS.sub(" ", _BRACKETS.sub(" ", text)))
    out = re.sub(r"\s*/\s*(?=/)|^\s*/|/\s*$", " ", out)
    return re.sub(r"\s+", " ", out).strip(" /"), per_ml


def _atc_index(kb: KnowledgeBase) -> dict[str, list[str]]:
    index = getattr(kb, "_rxt_atc_reverse", None)
    if index is None:
        index = {}
        for ingredient, codes in kb.atc.items():
            for code in codes:
                index.setdefault(code.upper(), []).append(ingredient)
        kb._rxt_atc_reverse = index  # type: ignore[attr-defined]  # cached on the immutable KB object
    return index


@dataclass
class DrugName:
    name: str | None
    how: str                      # "atc" | "text" | "display" | "none"
    strength_mg_per_ml: float | None = None
    codes: str = ""


def medication_name(cc, kb: KnowledgeBase) -> DrugName:
    """The name the checker will resolve: an ATC code the KB knows, else CodeableConcept.text, else a coding
    display (RxNorm, SNOMED CT, UNII ... are read by their display: the KB holds no RxNorm/SNOMED/UNII codes)."""
    codes = _code_label(cc)
    atc = _atc_index(kb)
    for c in _codings(cc):
        if (c.system or "").rstrip("/") == ATC and c.code:
            ings = atc.get(c.code.strip().upper())
            if ings and len(ings) == 1:
                return DrugName(ings[0], "atc", None, codes)
    texts = _cc_texts(cc)
    fallback = None
    for i, text in enumerate(texts):
        name, per_ml = clean_drug_text(text)
        if not name:
            continue
        res = kb.normalizer.resolve(name)
        how = "text" if (i == 0 and getattr(cc, "text", None)) else "display"
        if res.recognised and res.match not in ("partial", "fuzzy"):
            return DrugName(name, how, per_ml, codes)
        if fallback is None:
            fallback = DrugName(name, how, per_ml, codes)
    return fallback or DrugName(None, "none", None, codes)


def _route(dosage) -> str | None:
    cc = getattr(dosage, "route", None)
    for text in _cc_texts(cc):
        t = text.lower().strip().removesuffix(" route").removeprefix("route of administration:").strip()
        t = t.removeprefix("per ").strip()
        first = t.split()[0] if t.split() else t
        for candidate in (t, first):
            if candidate in ROUTES and ROUTES[candidate]:
                return candidate
        if t:
            return t[:40]
    return None


def _frequency(timing) -> tuple[str | None, str | None]:
    """(frequency text the checker reads, problem) from a Timing."""
    if timing is None:
        return None, None
    for c in _codings(getattr(timing, "code", None)):
        if c.code:
            word = _GTS_EXTRA.get(c.code.lower(), c.code.lower())
            if frequency_per_day(word) is not None:
                return word, None
    rep = getattr(timing, "repeat", None)
    if rep is None:
        return None, None
    freq = rep.frequencyMax or rep.frequency
    if freq is None and rep.timeOfDay:
        return f"{len(rep.timeOfDay)} times a day" if len(rep.timeOfDay) <= 6 else None, None
    if rep.period is None or rep.periodUnit is None:
        return None, None
    per_day_period = _PERIOD_DAYS.get(rep.periodUnit)
    period = _num(rep.period)
    if per_day_period is None or not period:
        return None, f"timing period unit {rep.periodUnit!r} is not understood"
    per_day = (freq or 1) / (period * per_day_period)
    if abs(per_day - round(per_day)) < 1e-9 and 1 <= round(per_day) <= 6:
        text = f"{int(round(per_day))} times a day"
    elif 0 < per_day < 1 and abs(1 / per_day - round(1 / per_day)) < 1e-9:
        text = f"q{int(round(1 / per_day))}d"
    elif per_day > 0 and abs(24 / per_day - round(24 / per_day)) < 1e-9 and round(24 / per_day) >= 1:
        text = f"q{int(round(24 / per_day))}h"
    else:
        return None, f"timing {freq or 1} per {rep.period:g} {rep.periodUnit} cannot be expressed as a daily rate"
    return (text if frequency_per_day(text) is not None else None), None


def _duration_days(dosage, resource) -> float | None:
    rep = getattr(getattr(dosage, "timing", None), "repeat", None)
    dur = getattr(rep, "boundsDuration", None) if rep is not None else None
    if dur is None:
        dur = getattr(getattr(resource, "dispenseRequest", None), "expectedSupplyDuration", None)
    if dur is None or dur.value is None:
        return None
    factor = _DURATION_DAYS.get((dur.code or dur.unit or "").strip().lower())
    value = _num(dur.value) * factor if factor else None
    return value if value and 0 < value <= 3650 else None


def _dose_unit(quantity) -> str | None:
    for key in (quantity.code, quantity.unit):
        if not key:
            continue
        k = key.strip().lower()
        if k in _UCUM_DOSE:
            return _UCUM_DOSE[k]
        k2 = k.rstrip(".").strip("{}")
        if k2 in MASS_UNITS_MG or k2 in VOLUME_UNITS_ML or k2 in COUNT_UNITS:
            return k2
    return None


# --- the mapping ----------------------------------------------------------------------------------------------


class _Mapper:
    def __init__(self, kb: KnowledgeBase, today: date) -> None:
        self.kb = kb
        self.today = today
        self.unchecked: list[Unchecked] = []
        self.inputs: dict[str, Any] = {}

    def note(self, rule_id: str, summary: str, detail: str, path: str, order_ids=None, drugs=None) -> None:
        self.unchecked.append(Unchecked(rule_id, summary, detail, path, list(order_ids or []), list(drugs or [])))

    # -- draft orders
    def order(self, path: str, res, raw: dict, contained: dict[str, Any], selections: set[str] | None) -> DraftOrder:
        rid = f"MedicationRequest/{res.id}" if res.id else f"MedicationRequest at {path}"
        order = DraftOrder(resource_id=rid, raw=raw, path=path,
                           selected=selections is None or rid in selections)
        cc = res.medicationCodeableConcept
        if cc is None and res.medicationReference is not None:
            ref = (res.medicationReference.reference or "").strip()
            med = contained.get(ref) or contained.get(ref.lstrip("#"))
            cc = getattr(med, "code", None) if med is not None else None
            if cc is None:
                self.note("CDS-MEDICATION-NOT-PROVIDED", f"Order {rid}: medication {ref or '?'} was not sent; "
                          "order not checked",
                          f"The order names its medication by reference (`{ref or '?'}`), and that Medication was "
                          "neither contained in the order nor in the draftOrders Bundle, so the order was **not "
                          "checked** (interactions, allergy, dose, patient rules).", f"{path}.medicationReference",
                          [rid])
                return order
        drug = medication_name(cc, self.kb)
        if drug.name is None:
            self.note("CDS-MEDICATION-UNMAPPED", f"Order {rid}: medication code not recognised; order not checked",
                      f"The medication is coded as {drug.codes} with no text or display the knowledge base can "
                      "read (it maps ATC codes and drug names; RxNorm, SNOMED CT and UNII codes are read through "
                      "their display text). The order was **not checked**.", f"{path}.medicationCodeableConcept",
                      [rid])
            return order
        order.name = drug.name
        item: dict[str, Any] = {"drug": drug.name[:300]}
        if drug.strength_mg_per_ml:
            item["strength_mg_per_ml"] = drug.strength_mg_per_ml
        dosage = (res.dosageInstruction or [None])[0]
        sig_text = None
        if dosage is not None:
            if len(res.dosageInstruction) > 1:
                self.note("CDS-DOSAGE-EXTRA", f"Order {rid}: only the first of {len(res.dosageInstruction)} "
                          "dosage instructions was dose-checked",
                          "Sequential or tapering dosage instructions are not combined; the dose checks used the "
                          "first `dosageInstruction` only.", f"{path}.dosageInstruction", [rid], [drug.name])
            self._dose(order, item, dosage, f"{path}.dosageInstruction[0]", drug.name)
            route = _route(dosage)
            if route:
                item["route"] = route
            freq, problem = _frequency(dosage.timing)
            if freq:
                item["frequency"] = freq
            elif problem:
                self.note("CDS-TIMING-UNMAPPED", f"Order {rid}: timing not understood; daily dose not checked",
                          f"{problem[0].upper()}{problem[1:]}, so the daily dose of {drug.name} was not checked.",
                          f"{path}.dosageInstruction[0].timing", [rid], [drug.name])
            if dosage.asNeededBoolean or dosage.asNeededCodeableConcept is not None:
                item["prn"] = True
            days = _duration_days(dosage, res)
            if days:
                item["duration_days"] = days
            if dosage.text and dosage.text.strip() and ("dose" not in item or "frequency" not in item):
                sig_text = f"{drug.name} {dosage.text.strip()}"[:1000]
        if sig_text:
            item["sig"] = sig_text
        order.item = item
        return order

    def _dose(self, order: DraftOrder, item: dict, dosage, path: str, drug: str) -> None:
        for j, dr in enumerate(dosage.doseAndRate or []):
            qty = dr.doseQuantity
            where = f"{path}.doseAndRate[{j}].doseQuantity"
            if qty is None and dr.doseRange is not None:
                qty = dr.doseRange.high or dr.doseRange.low
                where = f"{path}.doseAndRate[{j}].doseRange"
            if qty is None or qty.value is None:
                continue
            value = _num(qty.value)
            unit = _dose_unit(qty)
            if unit is None or value is None or not (0 < value <= 1_000_000):
                self.note("CDS-DOSE-UNIT-UNMAPPED", f"Order {order.resource_id}: dose unit "
                          f"{(qty.code or qty.unit or '?')!r} not convertible; dose not checked",
                          f"The dose {qty.value} {qty.unit or qty.code or ''} of {drug} could not be converted to "
                          "a unit the dose limits use (mg, g, mcg, mL with a strength, tablets, capsules ...), so "
                          "single and daily dose limits were **not checked** for this order.", where,
                          [order.resource_id], [drug])
                return
            item["dose"], item["unit"] = value, unit
            order.dose_value, order.dose_unit, order.dose_ucum = value, unit, qty.code or qty.unit
            order.mass_dose = unit.lower() in MASS_UNITS_MG
            return

    # -- patient
    def patient(self, resources: list[tuple[str, Any, dict]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        patients = [(p, r) for p, r, _ in resources if r.get_resource_type() == "Patient"]
        if not patients:
            self.note("CDS-PATIENT-MISSING", "Patient record not sent: age and sex checks not run",
                      "No Patient resource came in `prefetch` (key `patient`), so age-specific rules, paediatric "
                      "dose limits and the sex-dependent pregnancy check were **not run**.", "prefetch.patient")
            return out
        path, pat = patients[0]
        if pat.gender in ("male", "female", "other"):
            out["sex"] = pat.gender
        birth = pat.birthDate
        if birth is not None:
            if isinstance(birth, str):
                parts = [int(x) for x in birth.split("-")]
                birth = date(parts[0], parts[1] if len(parts) > 1 else 7, parts[2] if len(parts) > 2 else 1)
            age = (self.today - birth).days / 365.2425
            if 0 <= age <= 130:
                out["age_years"] = round(age, 2)
            else:
                self.note("CDS-AGE-INVALID", "Patient birth date out of range: age checks not run",
                          f"birthDate {pat.birthDate} gives an age of {age:.1f} years; age-specific rules were "
                          "**not run**.", f"{path}.birthDate")
        else:
            self.note("CDS-AGE-MISSING", "Patient birth date not sent: age checks not run",
                      "The Patient has no birthDate, so age-specific rules and paediatric dose limits were **not "
                      "run**.", f"{path}.birthDate")
        return out

    # -- allergies
    def allergies(self, resources) -> list[str]:
        out: list[str] = []
        for path, res, _ in resources:
            if res.get_resource_type() != "AllergyIntolerance":
                continue
            if _status(res.clinicalStatus) & {"inactive", "resolved"} or \
                    _status(res.verificationStatus) & {"refuted", "entered-in-error"}:
                continue
            drug = medication_name(res.code, self.kb) if res.code is not None else DrugName(None, "none")
            texts = _cc_texts(res.code)
            text = drug.name if drug.how == "atc" else (texts[0] if texts else None)
            if not text:
                self.note("CDS-ALLERGY-UNMAPPED", "An allergy is coded in a way the service cannot read",
                          f"AllergyIntolerance coded as {drug.codes} has no text or display, so it was **not "
                          "checked** against the orders.", f"{path}.code")
                continue
            out.append(text[:300])
        return out

    # -- conditions (and what they say about pregnancy and the liver)
    def conditions(self, resources) -> tuple[list[str], bool | None, str | None, list[str]]:
        texts: list[str] = []
        pregnant: bool | None = None
        grade: str | None = None
        liver: list[str] = []
        for path, res, _ in resources:
            if res.get_resource_type() != "Condition":
                continue
            if _status(res.clinicalStatus) & {"inactive", "resolved", "remission"} or \
                    _status(res.verificationStatus) & {"refuted", "entered-in-error"}:
                continue
            names = _cc_texts(res.code)
            codes = [c.code for c in _codings(res.code) if c.system in ICD10_SYSTEMS and c.code]
            if not names and not codes:
                self.note("CDS-CONDITION-UNMAPPED", "A condition is coded in a way the service cannot read",
                          f"Condition coded as {_code_label(res.code)} has no text, display or ICD-10 code, so "
                          "condition contraindications were **not checked** against it.", f"{path}.code")
                continue
            texts.extend(codes + names[:1])
            stage_texts = [t for s in (res.stage or []) for t in _cc_texts(s.summary)]
            everything = " ".join(names + stage_texts).lower()
            if _has_code(res.code, SNOMED, PREGNANCY_CONDITION_CODES) or re.search(r"\bpregnan(t|cy)\b", everything) \
                    and not re.search(r"\b(not|no|non)[- ]pregnan", everything):
                pregnant = True
            m = re.search(r"child[- ]?pugh\s*(?:class\s*)?([abc])\b", everything)
            if m:
                grade = {"a": "mild", "b": "moderate", "c": "severe"}[m.group(1)]
            else:
                m = re.search(r"\b(mild|moderate|severe) (hepatic|liver) (impairment|insufficiency)\b", everything)
                if m:
                    grade = m.group(1)
                elif re.search(r"\b(cirrhosis|hepatic|liver)\b", everything) or any(c.upper().startswith(("K70", "K72", "K74")) for c in codes):
                    liver.append(names[0] if names else codes[0])
        return texts, pregnant, grade, liver

    # -- observations
    def observations(self, resources) -> dict[str, Any]:
        latest: dict[str, tuple[str, Any, str]] = {}
        for path, res, _ in resources:
            if res.get_resource_type() != "Observation" or res.status in ("entered-in-error", "cancelled"):
                continue
            loinc = {c.code for c in _codings(res.code) if c.system == LOINC and c.code}
            kind = ("weight" if loinc & WEIGHT_CODES else "egfr" if loinc & EGFR_CODES else
                    "crcl" if loinc & CRCL_CODES else "creatinine" if loinc & CREATININE_CODES else
                    "pregnancy" if loinc & PREGNANCY_CODES else None)
            if kind is None:
                continue
            when = res.effectiveDateTime or getattr(res.effectivePeriod, "end", None) or res.issued
            key = when.isoformat() if isinstance(when, datetime) else str(when or "")
            if kind not in latest or key > latest[kind][2]:
                latest[kind] = (path, res, key)
        out: dict[str, Any] = {}
        if "weight" in latest:
            path, res, _ = latest["weight"]
            kg = self._quantity(res, path, _WEIGHT_KG, "body weight", "weight-based dose limits")
            if kg is not None:
                if 0 < kg <= 500:
                    out["weight_kg"] = round(kg, 3)
                else:
                    self._unit_note(path, f"body weight {kg:g} kg is out of range", "weight-based dose limits")
        if "egfr" in latest:
            path, res, _ = latest["egfr"]
            value = self._quantity(res, path, {u: 1.0 for u in _EGFR_UNITS}, "eGFR", "renal dosing")
            if value is not None and 0 <= value <= 250:
                out["egfr"] = value
        if "crcl" in latest:
            path, res, _ = latest["crcl"]
            value = self._quantity(res, path, _PER_MIN, "creatinine clearance", "renal dosing")
            if value is not None and 0 <= value <= 250:
                out["crcl"] = round(value, 2)
        if "creatinine" in latest:
            path, res, _ = latest["creatinine"]
            q = res.valueQuantity
            if q is not None and q.value is not None:
                self.inputs["serum_creatinine"] = f"{_num(q.value):g} {q.unit or q.code or ''}".strip()
        if "pregnancy" in latest:
            path, res, _ = latest["pregnancy"]
            cc = res.valueCodeableConcept
            if _has_code(cc, None, PREGNANT_ANSWERS):
                out["pregnant"] = True
            elif _has_code(cc, None, NOT_PREGNANT_ANSWERS):
                out["pregnant"] = False
        return out

    def _quantity(self, res, path: str, table: dict[str, float], what: str, check: str) -> float | None:
        q = res.valueQuantity
        if q is None or q.value is None:
            self._unit_note(f"{path}.value[x]", f"the {what} observation carries no quantity", check)
            return None
        for key in (q.code, q.unit):
            if key and key.strip().lower() in table:
                return _num(q.value) * table[key.strip().lower()]
        self._unit_note(f"{path}.valueQuantity", f"the {what} unit {(q.code or q.unit or 'none')!r} cannot be "
                        "converted", check)
        return None

    def _unit_note(self, path: str, why: str, check: str) -> None:
        self.note("CDS-OBSERVATION-UNIT", f"Observation not usable ({why}): {check} not checked"[:139],
                  f"{why[0].upper()}{why[1:]}, so {check} **could not be checked** with it.", path)


def _contained(res) -> dict[str, Any]:
    return {f"#{c.id}": getattr(c, "resource", c) for c in (res.contained or []) if getattr(c, "id", None)}


def map_hook(context: dict[str, Any], prefetch: dict[str, Any] | None, kb: KnowledgeBase, *,
             today: date | None = None, hook: str = "order-sign") -> MappedRequest:
    """Read a CDS Hooks order-select / order-sign ``context`` and ``prefetch`` into a checker Prescription."""
    today = today or datetime.now(UTC).date()
    mapper = _Mapper(kb, today)
    if not isinstance(context, dict):
        raise MappingError("context", "must be an object")
    for key in ("userId", "patientId", "draftOrders") + (("selections",) if hook == "order-select" else ()):
        if context.get(key) in (None, "", []) and not (key == "selections" and key in context):
            raise MappingError(f"context.{key}", f"required by the {hook} hook")
    for key in ("userId", "patientId"):
        if not isinstance(context[key], str) or len(context[key]) > 300:
            raise MappingError(f"context.{key}", "must be a string of at most 300 characters")
    selections = None
    if "selections" in context:
        sel = context["selections"]
        if not isinstance(sel, list) or not all(isinstance(s, str) and len(s) <= 300 for s in sel):
            raise MappingError("context.selections", "must be an array of strings (e.g. 'MedicationRequest/103')")
        selections = set(sel) or None
    drafts = context["draftOrders"]
    if not isinstance(drafts, dict) or drafts.get("resourceType") != "Bundle":
        raise MappingError("context.draftOrders", "must be a FHIR Bundle")
    entries = parse_resources(drafts, "context.draftOrders", bundle_default_type=True)
    bundle_meds = {f"Medication/{r.id}": r for _, r, _ in entries if r.get_resource_type() == "Medication" and r.id}

    prefetch = prefetch or {}
    if not isinstance(prefetch, dict):
        raise MappingError("prefetch", "must be an object")
    fetched: dict[str, list[tuple[str, Any, dict]]] = {}
    for key, value in prefetch.items():
        fetched[key] = parse_resources(value, f"prefetch.{key}", bundle_default_type=True)
    everything = [r for items in fetched.values() for r in items]

    orders: list[DraftOrder] = []
    items: list[dict] = []
    for path, res, raw in entries:
        if res.get_resource_type() != "MedicationRequest":
            continue  # nutrition, service, device orders: not a prescription check's business
        order = mapper.order(path, res, raw, {**bundle_meds, **_contained(res)}, selections)
        orders.append(order)
        if order.item is not None:
            order.item_index = len(items)
            items.append(order.item)
    if len(items) > MAX_ITEMS:
        raise MappingError("context.draftOrders.entry", f"at most {MAX_ITEMS} MedicationRequests per call")

    patient = mapper.patient(everything)
    draft_ids = {o.resource_id for o in orders}
    current: list[str] = []
    if not any(k in prefetch for k in ("medications",)) and not any(
            r.get_resource_type() == "MedicationRequest" for _, r, _ in everything):
        mapper.note("CDS-MEDICATIONS-MISSING", "Current medications not sent: interactions with them not checked",
                    "No active MedicationRequests came in `prefetch` (key `medications`), so interactions and "
                    "duplicate therapy were checked **among the draft orders only**.", "prefetch.medications")
    for path, res, _ in everything:
        if res.get_resource_type() != "MedicationRequest" or res.status not in ("active", "on-hold", None):
            continue
        if f"MedicationRequest/{res.id}" in draft_ids:
            continue
        cc = res.medicationCodeableConcept
        if cc is None and res.medicationReference is not None:
            cc = getattr(_contained(res).get(res.medicationReference.reference or ""), "code", None)
        drug = medication_name(cc, kb) if cc is not None else DrugName(None, "none")
        if drug.name is None:
            mapper.note("CDS-CURRENT-MED-UNMAPPED", "A current medication could not be identified: interactions "
                        "with it not checked",
                        f"An active MedicationRequest coded as {drug.codes} has no readable name, so interactions "
                        "and duplicate therapy with it were **not checked**.", f"{path}.medication[x]")
            continue
        if drug.name not in current:
            current.append(drug.name[:300])

    if "allergies" not in prefetch and not any(r.get_resource_type() == "AllergyIntolerance" for _, r, _ in everything):
        mapper.note("CDS-ALLERGIES-MISSING", "Allergies not sent: allergy checks not run",
                    "No AllergyIntolerance resources came in `prefetch` (key `allergies`), so allergy and "
                    "cross-sensitivity checks were **not run**. Send an empty Bundle when the patient has none.",
                    "prefetch.allergies")
    allergies = mapper.allergies(everything)
    conditions, cond_pregnant, grade, liver = mapper.conditions(everything)
    obs = mapper.observations(everything)

    pat: dict[str, Any] = {**patient, **{k: v for k, v in obs.items() if k != "pregnant"}}
    pregnant = obs.get("pregnant") if "pregnant" in obs else cond_pregnant
    if pregnant is not None:
        pat["pregnant"] = pregnant
    if grade:
        pat["hepatic_impairment"] = grade
    for key, values in (("allergies", allergies), ("conditions", conditions), ("current_medications", current)):
        uniq = list(dict.fromkeys(values))
        if len(uniq) > LIST_CAPS[key]:
            mapper.note(f"CDS-{key.upper().replace('_', '-')}-TRUNCATED",
                        f"Only the first {LIST_CAPS[key]} of {len(uniq)} {key.replace('_', ' ')} were checked",
                        f"The checker takes at most {LIST_CAPS[key]} {key.replace('_', ' ')}; the rest were **not "
                        "checked**.", f"prefetch.{key}")
            uniq = uniq[:LIST_CAPS[key]]
        if uniq:
            pat[key] = uniq

    # what the patient data does not let us check, for the drugs ordered
    mapper.inputs.update({k: v for k, v in pat.items() if k in ("age_years", "sex", "weight_kg", "egfr", "crcl",
                                                                 "pregnant", "hepatic_impairment")})
    _missing_patient_data(mapper, kb, orders, items, pat, liver)

    prescription = None
    if items:
        try:
            prescription = Prescription.model_validate({"patient": pat,
                                                        "items": items, "prescriber_id": context["userId"]})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err.get("loc", ()))
            raise MappingError(_rx_path(loc, orders), str(err.get("msg", "invalid")).removeprefix("Value error, ")) \
                from None
    return MappedRequest(prescription, orders, mapper.unchecked, mapper.inputs)


def _rx_path(loc: tuple, orders: list[DraftOrder]) -> str:
    if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
        order = next((o for o in orders if o.item_index == loc[1]), None)
        if order is not None:
            return order.path + ("" if len(loc) < 3 else f" ({loc[2]})")
    if loc and loc[0] == "prescriber_id":
        return "context.userId"
    return "prefetch" if loc and loc[0] == "patient" else "context.draftOrders"


def _missing_patient_data(mapper: _Mapper, kb: KnowledgeBase, orders: list[DraftOrder], items: list[dict],
                          pat: dict, liver: list[str]) -> None:
    by_table: dict[str, list[tuple[str, str]]] = {"renal_dosing": [], "hepatic_dosing": [], "pregnancy": []}
    for order in orders:
        if order.item_index is None or not order.name:
            continue
        for ing in kb.normalizer.resolve(order.name).ingredients:
            if kb.rows_for("renal_dosing", ing):
                by_table["renal_dosing"].append((ing, order.resource_id))
            if kb.rows_for("hepatic_dosing", ing):
                by_table["hepatic_dosing"].append((ing, order.resource_id))
            if any(r["context"] == "pregnancy" for r in kb.rows_for("pregnancy_lactation", ing)):
                by_table["pregnancy"].append((ing, order.resource_id))

    def drugs_and_orders(rows):
        return sorted({i for i, _ in rows}), sorted({o for _, o in rows})

    if by_table["renal_dosing"] and pat.get("egfr") is None and pat.get("crcl") is None:
        drugs, ids = drugs_and_orders(by_table["renal_dosing"])
        scr = mapper.inputs.get("serum_creatinine")
        extra = (f" A serum creatinine ({scr}) was sent, but the checker uses eGFR or creatinine clearance and does "
                 "not estimate them.") if scr else ""
        mapper.note("CDS-RENAL-NOT-CHECKED", f"Renal function not sent: renal dosing of {', '.join(drugs)} not "
                    "checked"[:139],
                    f"{', '.join(drugs)} {'has' if len(drugs) == 1 else 'have'} renal dosing rules, but no eGFR "
                    f"(LOINC {', '.join(sorted(EGFR_CODES))}) or creatinine clearance (LOINC "
                    f"{', '.join(sorted(CRCL_CODES))}) Observation with a convertible unit came in `prefetch`, so "
                    f"renal dosing was **not checked**.{extra}", "prefetch.renal", ids, drugs)
    if by_table["hepatic_dosing"] and pat.get("hepatic_impairment") is None and liver:
        drugs, ids = drugs_and_orders(by_table["hepatic_dosing"])
        mapper.note("CDS-HEPATIC-NOT-CHECKED", f"Liver disease without a Child-Pugh class: hepatic dosing of "
                    f"{', '.join(drugs)} not checked"[:139],
                    f"The patient has {', '.join(repr(x) for x in liver[:3])} on the problem list, but no Child-Pugh "
                    "class (A/B/C) or 'mild/moderate/severe hepatic impairment' in the Condition, so hepatic dosing "
                    f"of {', '.join(drugs)} was **not checked**.", "prefetch.conditions", ids, drugs)
    if by_table["pregnancy"] and pat.get("pregnant") is None and pat.get("sex") != "male":
        drugs, ids = drugs_and_orders(by_table["pregnancy"])
        mapper.note("CDS-PREGNANCY-NOT-CHECKED", f"Pregnancy status not sent: pregnancy risk of {', '.join(drugs)} "
                    "not checked"[:139],
                    f"{', '.join(drugs)} {'has' if len(drugs) == 1 else 'have'} pregnancy rules, but no pregnancy "
                    f"status Observation (LOINC {', '.join(sorted(PREGNANCY_CODES))}) or pregnancy Condition came "
                    "in `prefetch`, so the pregnancy check was **not run**.", "prefetch.pregnancy", ids, drugs)
