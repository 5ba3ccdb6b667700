"""Build the prescription-check gold set ``datasets/drugs/gold_prescriptions.jsonl``.

    python -m training gold [--kb PATH] [--rxsafebench N]

Cases are derived deterministically from (1) the curated tables (one unsafe case per usable row, plus a safe
negative control for many rows), (2) DDInter pairs (Major/Moderate, written with DDInter's own spelling), (3)
RxSafeBench interaction scenarios (the unsafe drug with the patient's current medication, as in the dialogue),
and (4) hand-checked cases (duplicates, brands, misspellings, unrecognised drugs, unparseable sigs, safe
regimens).  Each case has ``provenance`` ("table:<file>#<row>", "ddinter:<file-letter>:<a>|<b>",
"rxsafebench:<indication>#<k>", "hand-checked") and ``expected`` findings (category, ingredients,
min_severity); ``unsafe`` is true when any expected finding is at least moderate.
Expected ingredients are canonical names from the normaliser (the same KB the checker uses).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
from pathlib import Path

from prescription_check import Checker
from prescription_check.kb import KnowledgeBase
from prescription_check.schemas import SEVERITIES
from serving.settings import CURATED_DRUG_TABLES_DIR, get_settings
from training.kb_build import CURATED_DIR, HEPATIC_GRADES, ensure_kb, read_curated
from training.sources import source_file

OUT = CURATED_DRUG_TABLES_DIR / "gold_prescriptions.jsonl"
SEV_ORDER = list(SEVERITIES)


_KB: KnowledgeBase | None = None


def _canon(ing: str) -> str:
    res = _KB.normalizer.resolve(ing).ingredients if _KB else []
    return res[0] if len(res) == 1 else ing


def _dose_above(max_daily_mg: float, adult: dict, schedules) -> tuple[float, str] | None:
    """(dose per administration, frequency) giving 1.5x a table's daily maximum while staying inside the adult
    single and daily limits, trying ``schedules`` ((times per day, frequency), ...) in order; None if none does."""
    for times, freq in schedules:
        per = round(max_daily_mg * 1.5 / times, 3)
        if (adult.get("max_single_mg") is None or per <= adult["max_single_mg"]) and (
                adult.get("max_daily_mg") is None or per * times <= adult["max_daily_mg"]):
            return per, freq
    return None


def _case(cid, items, expected, provenance, patient=None, note="", unsafe=None):
    exp = [{"category": c, "ingredients": [_canon(x) for x in i], "min_severity": s} for c, i, s in expected]
    return {"id": cid, "prescription": {"patient": patient or {"age_years": 45}, "items": items},
            "expected": exp,
            "unsafe": any(SEV_ORDER.index(e["min_severity"]) <= 2 for e in exp) if unsafe is None else unsafe,
            "provenance": provenance, "note": note}


def _age_expect(age_rows: list[dict], kb: KnowledgeBase, ing: str, age: float) -> list[tuple]:
    """Age-rule findings that a case for ``ing`` at ``age`` must also produce (from the age table)."""
    out = []
    codes = kb.atc_codes(_canon(ing))
    for r in age_rows:
        if (r["ingredient"] and _canon(r["ingredient"]) == _canon(ing)) or (
                r["atc_prefix"] and any(c.startswith(r["atc_prefix"]) for c in codes)):
            lo, hi = r["age_min_years"], r["age_max_years"]
            if (lo is None or age >= lo) and (hi is None or age < hi):
                out.append(("age", [ing], r["severity"]))
    return out


def _example_for_prefix(kb: KnowledgeBase, prefix: str) -> str | None:
    """A well-known ingredient whose ATC code starts with prefix (the one with most DDInter pairs)."""
    cands = [i for i, codes in kb.atc.items() if any(c.startswith(prefix) for c in codes) and " " not in i]
    if not cands:
        return None
    counts = {i: 0 for i in cands}
    for key in kb.ddinter:
        a, b = key.split("|")
        if a in counts:
            counts[a] += 1
        if b in counts:
            counts[b] += 1
    return max(sorted(cands), key=lambda i: counts[i])


# ------------------------------------------------------------------------------- cases from the curated tables
# first-read order of the original single pass: a bad table is reported in the same order
GOLD_TABLES = ("age_rules.csv", "dose_limits.csv", "renal_dosing.csv", "hepatic_dosing.csv", "pregnancy_lactation.csv",
               "condition_contraindications.csv", "allergy_classes.csv", "cross_sensitivity.csv")
GRADES = ["none", *HEPATIC_GRADES]  # patient.hepatic_impairment, least to most severe


def read_tables(curated_dir: Path) -> dict[str, list[dict]]:
    """The curated tables the cases come from, validated, by name without '.csv' (a missing table: no rows)."""
    return {name.removesuffix(".csv"): read_curated(name, curated_dir) or [] for name in GOLD_TABLES}


def adult_limits(dose_rows: list[dict]) -> dict[str, dict]:
    """The first adult oral (or any-route) dose-limit row per ingredient: a dose chosen above a renal or hepatic
    maximum must stay inside it."""
    limits: dict[str, dict] = {}
    for r in dose_rows:
        if r["population"] == "adult" and r["route"] in ("oral", "any"):
            limits.setdefault(r["ingredient"], r)
    return limits


def _adult_dose_cases(r: dict) -> list[dict]:
    """One adult dose-limit row: a weekly drug taken daily (+ its weekly safe control), or 1.5x the single
    maximum, one dose a day more than the daily maximum allows, and half the daily maximum as a safe control."""
    cases: list[dict] = []
    ing, route = r["ingredient"], (r["route"] if r["route"] != "any" else None)
    prov = f"table:{r['_row']}"
    if r["frequency_rule"] == "weekly":
        dose = r["max_single_mg"] or 2.5
        cases.append(_case(f"dose-weekly-{r['_row']}", [{"drug": ing, "dose": min(dose, 7.5), "unit": "mg",
                           "route": route, "frequency": "daily"}], [("dose", [ing], "contraindicated")], prov))
        cases.append(_case(f"dose-weekly-ok-{r['_row']}", [{"drug": ing, "dose": min(dose, 7.5), "unit": "mg",
                           "route": route, "frequency": "once weekly"}], [], prov, note="safe control"))
        return cases
    if r["max_single_mg"]:
        d = r["max_single_mg"] * 1.5
        unit, shown = ("g", d / 1000) if d >= 1000 and d % 1000 == 0 else ("mg", d)
        cases.append(_case(f"dose-single-{r['_row']}", [{"drug": ing, "dose": shown, "unit": unit,
                           "route": route, "frequency": "once"}], [("dose", [ing], "major")], prov))
    if r["max_daily_mg"]:
        per = r["max_daily_mg"] / 2
        if r["max_single_mg"] and per > r["max_single_mg"]:
            per = r["max_single_mg"]
        times = int(r["max_daily_mg"] / per) + 1  # one dose more than allowed
        freq = {1: "daily", 2: "bid", 3: "tid", 4: "qid", 5: "q4h", 6: "q4h"}.get(times)
        if freq:
            daily = per * {"daily": 1, "bid": 2, "tid": 3, "qid": 4, "q4h": 6}[freq]
            if daily > r["max_daily_mg"] * 1.01:
                cases.append(_case(f"dose-daily-{r['_row']}", [{"drug": ing, "dose": round(per, 4),
                                   "unit": "mg", "route": route, "frequency": freq}],
                                   [("dose", [ing], "major")], prov))
        # safe control: half the daily maximum, once daily, within the single maximum
        safe = r["max_daily_mg"] / 2
        if not r["max_single_mg"] or safe <= r["max_single_mg"]:
            cases.append(_case(f"dose-ok-{r['_row']}", [{"drug": ing, "dose": round(safe, 4), "unit": "mg",
                               "route": route, "frequency": "daily"}], [], prov, note="safe control"))
    return cases


# Approximate median weight (kg) by age (days) for gold-case patients: WHO Child Growth Standards weight-for-age
# medians to 5 years, CDC 2000 growth chart medians after (test inputs only, not clinical content).
_MEDIAN_WEIGHT = ((0, 3.3), (30, 4.5), (61, 5.6), (91, 6.4), (182, 7.9), (365, 9.6), (730, 12.2), (1096, 14.3),
                  (1461, 16.3), (1826, 18.3), (2191, 20.7), (2922, 25.6), (3652, 31.9), (4383, 40.5), (5113, 51.0),
                  (5844, 61.0), (6575, 65.0))


def median_weight(age_days: float) -> float:
    """Linear interpolation in ``_MEDIAN_WEIGHT`` (kg, one decimal)."""
    pts = _MEDIAN_WEIGHT
    for (d0, w0), (d1, w1) in zip(pts, pts[1:]):
        if age_days <= d1:
            return round(w0 + (w1 - w0) * max(age_days - d0, 0) / (d1 - d0), 1)
    return pts[-1][1]


def pediatric_patient(r: dict) -> tuple[dict, float, float]:
    """(patient with age and weight, age in days, weight) inside a paediatric row's band: a row without a band
    keeps the original 6-year-old of 20 kg; a banded row gets the middle of its band (the upper end open: up to
    18 years), in days below 1 year, months below 2 years, years above, at the median weight for that age
    (below the row's weight ceiling)."""
    lo, hi, wmax = r.get("age_min_days"), r.get("age_max_days"), r.get("weight_max_kg")
    if lo is None and hi is None:
        days, patient = 6 * 365.25, {"age_years": 6}
        w = 20.0
    else:
        lo_d, hi_d = lo or 0, hi if hi is not None else 6574
        days = lo_d + (hi_d - lo_d) / 2
        if hi_d <= 29:
            days = min(10, (lo_d + hi_d) / 2)
        if days < 365:
            patient = {"age_days": int(days)}
            days = float(int(days))
        elif days < 730:
            patient = {"age_months": round(days / 30.4375, 1)}
            days = patient["age_months"] * 30.4375
        else:
            patient = {"age_years": round(days / 365.25, 1)}
            days = patient["age_years"] * 365.25
        w = median_weight(days)
    if wmax is not None and w >= wmax:
        w = round(wmax * 0.8, 1)
    return {**patient, "weight_kg": w}, days, w


def _pediatric_dose_cases(kb: KnowledgeBase, r: dict, age_rows: list[dict], adult: dict | None = None) -> list[dict]:
    """One paediatric row, for a child inside its age band (``pediatric_patient``): above the limit (1.5x the
    per-kg maximum, or 1.5x the fixed maximum for rows without mg/kg), for mg/kg rows the same child without
    a weight (a finding that the dose cannot be checked), and a safe control at 80% of every limit that applies
    (the row's per-kg and absolute limits, the adult row's) when the child has no age finding for the drug."""
    ing, route = r["ingredient"], (r["route"] if r["route"] != "any" else None)
    prov = f"table:{r['_row']}"
    patient, days, w = pediatric_patient(r)
    age_years = days / 365.25
    ages = _age_expect(age_rows, kb, ing, age_years)
    no_weight = {k: v for k, v in patient.items() if k != "weight_kg"}
    cases: list[dict] = []
    skg, dkg, smg, dmg = (r["max_single_mg_per_kg"], r["max_daily_mg_per_kg"], r["max_single_mg"],
                          r["max_daily_mg"])
    adult = adult or {}
    # limits for this weight: per dose and per day, the tightest of the row's per-kg, its caps and the adult's
    single_lim = min([x for x in (skg and skg * w, smg, adult.get("max_single_mg")) if x] or [0]) or None
    daily_lim = min([x for x in (dkg and dkg * w, dmg, adult.get("max_daily_mg")) if x] or [0]) or None
    if skg:
        over = [{"drug": ing, "dose": round(skg * w * 1.5, 3), "unit": "mg", "route": route, "frequency": "once"}]
    elif dkg:
        over = [{"drug": ing, "dose": round(dkg * w * 1.5 / 2, 3), "unit": "mg", "route": route, "frequency": "bid"}]
    elif smg:
        over = [{"drug": ing, "dose": round(smg * 1.5, 3), "unit": "mg", "route": route, "frequency": "once"}]
    elif dmg:
        over = [{"drug": ing, "dose": round(dmg * 1.5 / 2, 3), "unit": "mg", "route": route, "frequency": "bid"}]
    else:
        return []
    cases.append(_case(f"dose-ped-{r['_row']}", over, [("dose", [ing], "major"), *ages], prov, patient=patient,
                       note=f"above the paediatric limit, {patient}"))
    if dkg and single_lim and daily_lim:  # each dose within the per-dose limit, too many doses a day
        per = round(0.8 * single_lim, 3)
        times = next((n for n in (2, 3, 4, 6) if per * n > daily_lim * 1.05), None)
        if times:
            freq = {2: "bid", 3: "tid", 4: "qid", 6: "q4h"}[times]
            cases.append(_case(f"dose-ped-daily-{r['_row']}", [{"drug": ing, "dose": per, "unit": "mg", "route": route,
                               "frequency": freq}], [("dose", [ing], "major"), *ages], prov, patient=patient,
                               note="each dose within the paediatric limit, the daily total above it"))
    # a safe dose: 80% of the per-dose limit, as many doses a day as stay within 80% of the daily limit
    if daily_lim:
        per = min(0.8 * single_lim, 0.8 * daily_lim / 2) if single_lim else 0.8 * daily_lim / 2
        times = max(1, min(4, int(0.8 * daily_lim // per)))
    else:
        per, times = 0.8 * single_lim, 1
    freq = {1: "daily", 2: "bid", 3: "tid", 4: "qid"}[times]
    safe = [{"drug": ing, "dose": round(per, 3), "unit": "mg", "route": route, "frequency": freq}]
    if (skg or dkg) and not ages:
        cases.append(_case(f"dose-ped-noweight-{r['_row']}", safe, [("dose", [ing], "moderate")], prov,
                           patient=no_weight, note="child without a weight: the dose cannot be checked"))
    if not ages:
        cases.append(_case(f"dose-ped-ok-{r['_row']}", safe, [], prov, patient=patient,
                           note="safe control: within every limit for this child"))
    return cases


def dose_cases(kb: KnowledgeBase, dose_rows: list[dict], age_rows: list[dict]) -> list[dict]:
    """``dose_limits.csv``: adult rows (``_adult_dose_cases``) and pediatric per-kg rows (``_pediatric_dose_cases``)."""
    cases: list[dict] = []
    adult = {}
    for r in dose_rows:  # the adult row of the same ingredient and route: its maxima bound a child's dose too
        if r["population"] == "adult":
            adult.setdefault((r["ingredient"], r["route"]), r)
    for r in dose_rows:
        if r["population"] == "adult":
            cases += _adult_dose_cases(r)
        elif r["population"] == "pediatric" and (r["max_single_mg_per_kg"] or r["max_daily_mg_per_kg"]
                                                 or r.get("age_min_days") is not None
                                                 or r.get("age_max_days") is not None):
            cases += _pediatric_dose_cases(kb, r, age_rows, adult.get((r["ingredient"], r["route"]))
                                           or adult.get((r["ingredient"], "any")))
    return cases


def renal_cases(renal_rows: list[dict], limits: dict[str, dict]) -> list[dict]:
    """``renal_dosing.csv``: a patient in the middle of the row's eGFR/CrCl band; for a ``max_daily`` row a dose
    above the renal maximum that stays inside the adult limits (rows with no such dose are left out)."""
    cases: list[dict] = []
    for r in renal_rows:
        ing = r["ingredient"]
        lo, hi = r["egfr_min"] or 0, r["egfr_max"] if r["egfr_max"] is not None else 120
        value = round((lo + hi) / 2, 1) if hi <= 150 else lo + 10
        key = "egfr" if r["measure"] == "egfr" else "crcl"
        item = {"drug": ing}
        if r["action"] == "max_daily":
            if not r["max_daily_mg"]:
                continue
            chosen = _dose_above(r["max_daily_mg"], limits.get(ing, {}),
                                 ((2, "bid"), (3, "tid"), (4, "qid"), (1, "daily")))
            if chosen is None:
                continue  # no dose above the renal maximum stays inside the adult limits
            item.update(dose=chosen[0], unit="mg", frequency=chosen[1])
        cases.append(_case(f"renal-{r['_row']}", [item], [("renal", [ing], r["severity"])], f"table:{r['_row']}",
                           patient={"age_years": 60, key: value}))
    return cases


def hepatic_cases(hep_rows: list[dict], limits: dict[str, dict]) -> list[dict]:
    """``hepatic_dosing.csv``: a patient at the row's grade (above the hepatic daily maximum where the row has
    one, inside the adult limits), and for such a row a safe control within the maximum."""
    cases: list[dict] = []
    for r in hep_rows:
        ing, prov = r["ingredient"], f"table:{r['_row']}"
        item, ok_item = {"drug": ing}, None
        if r["max_daily_mg"]:
            chosen = _dose_above(r["max_daily_mg"], limits.get(ing, {}),
                                 ((2, "bid"), (1, "daily"), (3, "tid"), (4, "qid")))
            if chosen is None:
                continue  # no dose above the hepatic maximum stays inside the adult limits
            item.update(dose=chosen[0], unit="mg", frequency=chosen[1])
            ok_item = {"drug": ing, "dose": r["max_daily_mg"], "unit": "mg", "frequency": "daily"}
        cases.append(_case(f"hepatic-{r['_row']}", [item], [("hepatic", [ing], r["severity"])], prov,
                           patient={"age_years": 50, "hepatic_impairment": r["min_grade"]}))
        if ok_item:
            cases.append(_case(f"hepatic-ok-dose-{r['_row']}", [ok_item], [], prov,
                               patient={"age_years": 50, "hepatic_impairment": r["min_grade"]}, note="safe control"))
    return cases


def hepatic_safe_controls(kb: KnowledgeBase, hep_rows: list[dict], age_rows: list[dict]) -> list[dict]:
    """Safe controls for each drug of ``hepatic_dosing.csv``: no impairment, and one grade below its least severe
    row (drugs an age rule would flag at 50 are left out)."""
    cases: list[dict] = []
    grades = GRADES
    first_grade: dict[str, int] = {}
    for r in hep_rows:
        first_grade[r["ingredient"]] = min(first_grade.get(r["ingredient"], 9), grades.index(r["min_grade"]))
    for r in hep_rows:
        ing = r["ingredient"]
        if grades.index(r["min_grade"]) != first_grade[ing] or _age_expect(age_rows, kb, ing, 50):
            continue
        below = grades[first_grade[ing] - 1]
        for grade in dict.fromkeys(("none", below)):
            cases.append(_case(f"safe-hepatic-{grade}-{r['_row']}", [{"drug": ing}], [], f"table:{r['_row']}",
                               patient={"age_years": 50, "hepatic_impairment": grade}, note="safe control"))
    return cases


def pregnancy_cases(kb: KnowledgeBase, preg_rows: list[dict]) -> list[dict]:
    """``pregnancy_lactation.csv``: the drug (or the best-known drug of the ATC class) for a pregnant woman (in
    the row's first trimester, if it names one) or a breastfeeding one."""
    cases: list[dict] = []
    for r in preg_rows:
        ing = r["ingredient"] or _example_for_prefix(kb, r["atc_prefix"])
        if not ing:
            continue
        patient = {"age_years": 30, "sex": "female"}
        if r["context"] == "pregnancy":
            patient["pregnant"] = True
            if r["trimester"] not in ("", "any"):
                patient["trimester"] = int(r["trimester"].split("|")[0])
        else:
            patient["breastfeeding"] = True
        cat = "pregnancy" if r["context"] == "pregnancy" else "breastfeeding"
        cases.append(_case(f"{cat}-{r['_row']}", [{"drug": ing}], [(cat, [ing], r["severity"])], f"table:{r['_row']}",
                           patient=patient))
    return cases


def age_cases(kb: KnowledgeBase, age_rows: list[dict]) -> list[dict]:
    """``age_rules.csv``: the drug (or its ATC class's best-known drug) for a patient inside the row's age band."""
    cases: list[dict] = []
    for r in age_rows:
        ing = r["ingredient"] or _example_for_prefix(kb, r["atc_prefix"])
        if not ing:
            continue
        lo, hi = r["age_min_years"], r["age_max_years"]
        age = (lo + 5) if lo is not None and (hi is None or hi > lo + 5) else (hi - 1 if hi else 80)
        if lo is not None and hi is not None and hi - lo <= 5:
            age = (lo + hi) / 2
        cases.append(_case(f"age-{r['_row']}", [{"drug": ing}], [("age", [ing], r["severity"])], f"table:{r['_row']}",
                           patient={"age_years": age}))
    return cases


def condition_cases(kb: KnowledgeBase, cond_rows: list[dict]) -> list[dict]:
    """``condition_contraindications.csv``: the drug for a patient with the condition, once written as text
    (first term) and once as an ICD-10 code (first prefix), where the row gives them."""
    cases: list[dict] = []
    for r in cond_rows:
        ing = r["ingredient"] or _example_for_prefix(kb, r["atc_prefix"])
        if not ing:
            continue
        terms = [t for t in r["condition_terms"].split("|") if t.strip()]
        codes = [c for c in r["icd10_prefixes"].split("|") if c.strip()]
        if terms:
            cases.append(_case(f"cond-{r['_row']}", [{"drug": ing}], [("contraindication", [ing], r["severity"])],
                               f"table:{r['_row']}", patient={"age_years": 50, "conditions": [f"history of {terms[0]}"]}))
        if codes:
            cases.append(_case(f"cond-icd-{r['_row']}", [{"drug": ing}], [("contraindication", [ing], r["severity"])],
                               f"table:{r['_row']}", patient={"age_years": 50, "conditions": [codes[0] + ("9" if len(codes[0]) == 3 else "")]}))
    return cases


def safe_controls(kb: KnowledgeBase, renal_rows: list[dict], age_rows: list[dict], cond_rows: list[dict],
                  preg_rows: list[dict]) -> list[dict]:
    """Safe controls for the renal, age, condition and pregnancy tables: each drug once per table, for a
    40-year-old with normal kidneys, without the condition / not pregnant (drugs still flagged there are left
    out)."""
    cases: list[dict] = []
    seen_safe: set = set()

    def renal_hits(ing, value):
        return any(_canon(r["ingredient"]) == _canon(ing) and (r["egfr_min"] or 0) <= value <
                   (r["egfr_max"] if r["egfr_max"] is not None else 1e9) and r["action"] != "max_daily"
                   for r in renal_rows)

    for kind, rows in (("renal", renal_rows), ("age", age_rows), ("cond", cond_rows), ("preg", preg_rows)):
        for r in rows:
            ing = r["ingredient"] or _example_for_prefix(kb, r["atc_prefix"])
            if not ing or (kind, _canon(ing)) in seen_safe:
                continue
            seen_safe.add((kind, _canon(ing)))
            age = 40.0
            if _age_expect(age_rows, kb, ing, age):
                continue
            patient = {"age_years": age, "egfr": 95}
            if renal_hits(ing, 95):
                continue
            if kind == "cond":
                patient["conditions"] = ["seasonal allergic rhinitis"]
            if kind == "preg":
                patient.update(sex="female", pregnant=False, breastfeeding=False)
            cases.append(_case(f"safe-{kind}-{r['_row']}", [{"drug": ing}], [], f"table:{r['_row']}",
                               patient=patient, note="safe control"))
    return cases


def allergy_cases(kb: KnowledgeBase, class_rows: list[dict], cross_rows: list[dict]) -> list[dict]:
    """``allergy_classes.csv``: a class member for a patient allergic to the class (first alias);
    ``cross_sensitivity.csv``: a member of the cross-reacting class for a patient allergic to the other."""
    cases: list[dict] = []
    classes = {r["class_id"]: r for r in class_rows}
    for _cid, r in classes.items():
        members = [i for i in r["ingredients"].split("|") if i.strip()]
        aliases = [a for a in r["aliases"].split("|") if a.strip()] or [r["name"]]
        if members:
            m = kb.normalizer.resolve(members[0]).ingredients
            if m:
                cases.append(_case(f"allergy-class-{r['_row']}", [{"drug": members[0]}], [("allergy", m[:1], "contraindicated")],
                                   f"table:{r['_row']}", patient={"age_years": 40, "allergies": [aliases[0]]}))
    for r in cross_rows:
        a, b = classes.get(r["allergy_class"]), classes.get(r["cross_class"])
        if not a or not b:
            continue
        members = [i for i in b["ingredients"].split("|") if i.strip()]
        aliases = [x for x in a["aliases"].split("|") if x.strip()] or [a["name"]]
        if members:
            m = kb.normalizer.resolve(members[0]).ingredients
            if m:
                cases.append(_case(f"allergy-cross-{r['_row']}", [{"drug": members[0]}], [("allergy", m[:1], r["severity"])],
                                   f"table:{r['_row']}", patient={"age_years": 40, "allergies": [aliases[0]]}))
    return cases


def from_tables(kb: KnowledgeBase, curated_dir: Path) -> list[dict]:
    """Cases derived from the curated tables, one table family at a time (this order is the gold set's)."""
    t = read_tables(curated_dir)
    limits = adult_limits(t["dose_limits"])
    return (dose_cases(kb, t["dose_limits"], t["age_rules"])
            + renal_cases(t["renal_dosing"], limits)
            + hepatic_cases(t["hepatic_dosing"], limits)
            + hepatic_safe_controls(kb, t["hepatic_dosing"], t["age_rules"])
            + pregnancy_cases(kb, t["pregnancy_lactation"])
            + age_cases(kb, t["age_rules"])
            + condition_cases(kb, t["condition_contraindications"])
            + safe_controls(kb, t["renal_dosing"], t["age_rules"], t["condition_contraindications"],
                            t["pregnancy_lactation"])
            + allergy_cases(kb, t["allergy_classes"], t["cross_sensitivity"]))


def from_ddinter(kb: KnowledgeBase, n_major: int = 50, n_moderate: int = 25, seed: int = 4) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for letter in "ABDHLPRV":
        with source_file("ddinter", f"ddinter_downloads_code_{letter}.csv").open(newline="") as fh:
            for r in csv.DictReader(fh):
                if r["Level"] in ("Major", "Moderate") and "(" not in r["Drug_A"] + r["Drug_B"]:
                    rows.append((letter, r["Drug_A"], r["Drug_B"], r["Level"]))
    rows.sort()
    rng.shuffle(rows)
    out, seen = [], set()
    want = {"Major": n_major, "Moderate": n_moderate}
    for letter, a, b, level in rows:
        if want[level] <= 0:
            continue
        ia, ib = kb.normalizer.resolve(a).ingredients, kb.normalizer.resolve(b).ingredients
        if len(ia) != 1 or len(ib) != 1 or ia == ib:
            continue
        key = tuple(sorted((ia[0], ib[0])))
        hit = kb.interaction(*key)
        if key in seen or hit is None or hit[1].get("origin") != "ddinter":
            continue  # a curated/seed row overrides DDInter for this pair: not a DDInter test
        seen.add(key)
        want[level] -= 1
        sev = level.lower()
        out.append(_case(f"ddinter-{letter}-{len(out)}", [{"drug": a}, {"drug": b}],
                         [("interaction", sorted(key), sev)], f"ddinter:{letter}:{a}|{b}"))
    return out


def from_rxsafebench(kb: KnowledgeBase, n: int = 80, seed: int = 4) -> list[dict]:
    data = json.loads(source_file("rxsafebench", "RxSafeBench_Interaction.json").read_text())
    scen = []
    for ind in data:
        for k, sc in enumerate(ind["interaction"]):
            scen.append((ind["indication"], k, sc))
    rng = random.Random(seed)
    rng.shuffle(scen)
    out = []
    for indication, k, sc in scen:
        if len(out) >= n:
            break
        name = sc["interacton"]["name"]
        m = re.search(r"\(([^)]+)\)", name)
        current = m.group(1) if m else name
        ia = kb.normalizer.resolve(sc["med_false"]).ingredients
        ib = kb.normalizer.resolve(current).ingredients
        if len(ia) != 1 or len(ib) != 1 or ia == ib:
            continue  # single-ingredient products only: for a combination the interacting ingredient is not given
        out.append(_case(f"rxsafebench-{indication}-{k}", [{"drug": sc["med_false"]}],
                         [("interaction", sorted({ia[0], ib[0]}), "minor")], f"rxsafebench:{indication}#{k}",
                         patient={"age_years": 50, "current_medications": [current]}, unsafe=True,
                         note=f"RxSafeBench rank {sc['interacton']['rank']}; {name}"))
    return out


def hand_checked() -> list[dict]:
    H = "hand-checked"
    c = []
    dup_pairs = [("ibuprofen", "naproxen"), ("omeprazole", "pantoprazole"), ("sertraline", "fluoxetine"),
                 ("lisinopril", "enalapril"), ("losartan", "valsartan"), ("atorvastatin", "simvastatin"),
                 ("lorazepam", "diazepam"), ("oxycodone", "morphine"), ("metoprolol", "atenolol"),
                 ("amlodipine", "nifedipine"), ("glipizide", "glimepiride"), ("furosemide", "bumetanide"),
                 ("citalopram", "paroxetine"), ("diclofenac", "meloxicam"), ("rosuvastatin", "pravastatin"),
                 ("prednisone", "methylprednisolone"), ("ciprofloxacin", "levofloxacin"),
                 ("azithromycin", "clarithromycin"), ("quetiapine", "olanzapine"), ("apixaban", "warfarin")]
    for a, b in dup_pairs:
        c.append(_case(f"dup-class-{a}-{b}", [{"drug": a}, {"drug": b}], [("duplicate", [a, b], "moderate")], H))
    same = [("Tylenol", "acetaminophen", "acetaminophen"), ("Advil", "ibuprofen", "ibuprofen"),
            ("Lasix", "furosemide", "furosemide"), ("Coumadin", "warfarin", "warfarin"),
            ("Zestril", "lisinopril", "lisinopril"), ("Percocet", "Tylenol", "acetaminophen"),
            ("Norvasc", "amlodipine besylate", "amlodipine"), ("Glucophage", "metformin hydrochloride", "metformin"),
            ("Lipitor", "atorvastatin calcium", "atorvastatin"), ("HCTZ", "hydrochlorothiazide", "hydrochlorothiazide")]
    for a, b, ing in same:
        c.append(_case(f"dup-same-{a}-{b}", [{"drug": a}, {"drug": b}], [("duplicate", [ing], "major")], H))
        c.append(_case(f"dup-current-{a}-{b}", [{"drug": a}], [("duplicate", [ing], "major")], H,
                       patient={"age_years": 45, "current_medications": [b]}))
    fake = ["Zorblax 10 mg", "flurbinex", "Qwertazine", "abc123", "Xylophenamide", "Glorbutrin", "Snarfoxin",
            "Plimbutal", "Vextrozol 5", "Kwazimodo"]
    for f in fake:
        c.append(_case(f"unrecognised-{f}", [{"drug": f, "dose": 10, "unit": "mg", "frequency": "daily"}],
                       [("unrecognised_drug", [], "moderate")], H))
    bad_sigs = ["take as directed", "1 tab", "as needed for pain", "see instructions", "use daily as before",
                "???", "continue", "same as last time"]
    for s in bad_sigs:
        c.append(_case(f"unparsed-{s}", [{"sig": s}], [("unparsed_sig", [], "moderate")], H))
    safe = [
        ([{"sig": "amlodipine 5 mg po daily"}], {"age_years": 55}),
        ([{"sig": "lisinopril 10mg daily"}], {"age_years": 50, "egfr": 80}),
        ([{"sig": "metformin 500 mg bid"}], {"age_years": 52, "egfr": 75}),
        ([{"sig": "Amoxicillin 500 mg PO TID x 7 days"}], {"age_years": 30}),
        ([{"sig": "atorvastatin 20 mg qhs"}], {"age_years": 60}),
        ([{"sig": "omeprazole 20 mg daily"}], {"age_years": 45}),
        ([{"sig": "sertraline 50 mg daily"}], {"age_years": 35}),
        ([{"sig": "levothyroxine 50 mcg every morning"}], {"age_years": 40}),
        ([{"sig": "acetaminophen 500 mg q6h prn pain"}], {"age_years": 40}),
        ([{"sig": "cephalexin 500 mg qid x 7 days"}], {"age_years": 25, "allergies": ["sulfa"]}),
        ([{"sig": "azithromycin 250 mg daily x 4 days"}], {"age_years": 33, "allergies": ["penicillin"]}),
        ([{"sig": "methotrexate 7.5 mg once weekly"}], {"age_years": 50, "egfr": 90}),
        ([{"sig": "losartan 50 mg daily"}], {"age_years": 58}),
        ([{"sig": "montelukast 10 mg qhs"}], {"age_years": 28}),
        ([{"sig": "cetirizine 10 mg daily"}], {"age_years": 22}),
    ]
    for k, (items, patient) in enumerate(safe):
        c.append(_case(f"safe-{k}", items, [], H, patient=patient, note="safe regimen"))
    # weight-based paediatric dosing (issue 17), written as a prescriber would, checked by hand against the
    # cited limits (WHO 2012 / Ofirmev, Amoxil label, OTC Drug Facts, Motrin label)
    peds = [
        ("paracetamol 1000 mg po q6h", {"age_years": 4, "weight_kg": 16}, "major",
         "issue 17: 62.5 mg/kg per dose, 250 mg/kg/day (limit 15 mg/kg, 75 mg/kg/day)"),
        ("amoxicillin 250 mg po tid", {"age_days": 10, "weight_kg": 3.5}, "major",
         "neonate: 214 mg/kg/day (limit 30 mg/kg/day up to 12 weeks)"),
        ("Zyrtec 10 mg daily", {"age_years": 3, "weight_kg": 14}, "major", "2 to < 6 years: max 5 mg a day"),
        ("ibuprofen 150 mg po q6h", {"age_years": 4}, "moderate", "no weight: the mg/kg dose cannot be checked"),
        ("acetaminophen 240 mg po q6h", {"age_years": 4, "weight_kg": 16}, None, "15 mg/kg, 60 mg/kg/day"),
        ("ibuprofen 200 mg po q8h", {"age_years": 8, "weight_kg": 26}, None, "7.7 mg/kg, 23 mg/kg/day"),
        ("amoxicillin 250 mg po bid", {"age_months": 4, "weight_kg": 6.9}, None, "72 mg/kg/day (high dose 90)"),
        ("acetaminophen 1 g po q6h", {"age_years": 15, "weight_kg": 60}, None, ">= 50 kg: adult dosing"),
    ]
    for k, (sig, patient, sev, note) in enumerate(peds):
        ing = "acetaminophen" if "paracetamol" in sig else ("cetirizine" if "Zyrtec" in sig else sig.split()[0])
        c.append(_case(f"ped-dose-{k}", [{"sig": sig}], [("dose", [ing], sev)] if sev else [], H, patient=patient,
                       note=note))
    # label-documented interactions, written independently of the KB (FDA label section in the note)
    label_pairs = [
        ("simvastatin", "clarithromycin", "major", "Zocor label 4: strong CYP3A4 inhibitors contraindicated"),
        ("sildenafil", "nitroglycerin", "major", "Viagra label 4: nitrates contraindicated"),
        ("sildenafil", "isosorbide mononitrate", "major", "Viagra label 4: nitrates contraindicated"),
        ("warfarin", "fluconazole", "major", "Coumadin label 7: CYP2C9 inhibitors increase INR"),
        ("methotrexate", "Bactrim DS", "major", "methotrexate label 7: trimethoprim/sulfamethoxazole"),
        ("tramadol", "sertraline", "major", "Ultram label 5: serotonin syndrome"),
        ("linezolid", "sertraline", "major", "Zyvox label 5: serotonin syndrome"),
        ("phenelzine", "sertraline", "major", "Zoloft label 4: MAOIs contraindicated"),
        ("clopidogrel", "omeprazole", "moderate", "Plavix label 7: avoid omeprazole"),
        ("digoxin", "amiodarone", "major", "Cordarone/Lanoxin labels 7: raise digoxin levels"),
        ("theophylline", "ciprofloxacin", "major", "Cipro label 4/7: theophylline"),
        ("allopurinol", "azathioprine", "major", "Imuran label 7: reduce azathioprine dose"),
        ("colchicine", "clarithromycin", "major", "Colcrys label 7: strong CYP3A4 inhibitors, fatal toxicity"),
        ("tizanidine", "ciprofloxacin", "major", "Zanaflex label 4: ciprofloxacin contraindicated"),
        ("pimozide", "fluoxetine", "major", "Prozac label 4: pimozide contraindicated"),
        ("oxycodone", "alprazolam", "major", "opioid labels BOXED WARNING: benzodiazepines"),
        ("lithium", "hydrochlorothiazide", "moderate", "lithium label 7: thiazides raise lithium"),
        ("spironolactone", "potassium chloride", "major", "Aldactone label 4/7: potassium supplements"),
        ("rifampin", "ethinyl estradiol", "moderate", "Rifadin label 7: hormonal contraceptives less effective"),
        ("dofetilide", "verapamil", "major", "Tikosyn label 4: verapamil contraindicated"),
    ]
    for a, b, sev, note in label_pairs:
        ia = [x for x in (_KB.normalizer.resolve(a).ingredients if _KB else [a])][:1] or [a]
        ib = [x for x in (_KB.normalizer.resolve(b).ingredients if _KB else [b])]
        # a combination product (Bactrim DS) interacts through each of its ingredients
        c.append(_case(f"label-ddi-{a}-{b}", [{"drug": a}], [("interaction", sorted(ia + [x]), sev) for x in ib], H,
                       patient={"age_years": 55, "current_medications": [b]}, note=note))
    misspelt = [("amoxicilin", "amoxicillin"), ("lisinoprill", "lisinopril"), ("metformine", "metformin"),
                ("ibuprofin", "ibuprofen"), ("warfarine", "warfarin")]
    for w, ing in misspelt:
        c.append(_case(f"misspelt-allergy-{w}", [{"drug": w}], [("allergy", [ing], "contraindicated")], H,
                       patient={"age_years": 40, "allergies": [ing]}))
    return c


def build(kb: KnowledgeBase, curated_dir: Path = CURATED_DIR, n_rxsafebench: int = 80) -> list[dict]:
    cases = from_tables(kb, curated_dir) + from_ddinter(kb) + from_rxsafebench(kb, n_rxsafebench) + hand_checked()
    seen, out = set(), []
    for case in cases:
        if case["id"] in seen:
            continue
        seen.add(case["id"])
        case["prescription"]["items"] = [{k: v for k, v in it.items() if v is not None}
                                         for it in case["prescription"]["items"]]
        out.append(case)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training gold", description="build datasets/drugs/gold_prescriptions.jsonl")
    parser.add_argument("--kb", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=OUT)
    parser.add_argument("--rxsafebench", type=int, default=80)
    args = parser.parse_args(argv)
    global _KB
    settings = get_settings()
    if args.kb is not None:
        settings = settings.model_copy(update={"kb_path": args.kb})
    ensure_kb(settings)
    checker = Checker.load(settings.resolved_kb_path(), warm=False)
    _KB = checker.kb
    cases = build(checker.kb, n_rxsafebench=args.rxsafebench)
    with args.output.open("w") as fh:
        for case in cases:
            fh.write(json.dumps(case, ensure_ascii=False) + "\n")
    from collections import Counter

    prov = Counter(c["provenance"].split(":")[0] for c in cases)
    print(f"{len(cases)} cases ({sum(c['unsafe'] for c in cases)} unsafe) -> {args.output}; by provenance: {dict(prov)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
