"""Weight-based paediatric dosing by age band (issue 17), on the real KB built from the real tables.

Each test states a child, a prescription and what a paediatric pharmacist expects from the cited rows of
``datasets/drugs/dose_limits.csv`` (WHO 2012 / Ofirmev for paracetamol, the Amoxil label, OTC Drug Facts).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prescription_check import Prescription
from prescription_check.rules.dose import band_text


def check(checker, items, **patient):
    return checker.check(Prescription.model_validate({"patient": patient, "items": items}))


def dose(result, rule_id=None):
    return [f for f in result.findings if f.category == "dose" and (rule_id is None or f.rule_id == rule_id)]


def test_the_issue_example_is_caught_with_mg_per_kg_band_source_and_the_maximum_for_the_weight(rx_checker):
    # a 4-year-old, 16 kg, paracetamol 1,000 mg every 6 hours: passed before (adult limits only)
    r = check(rx_checker, [{"sig": "paracetamol 1000 mg po q6h"}], age_years=4, weight_kg=16)
    single = dose(r, "DOSE-MAX-SINGLE-PER-KG")[0]
    daily = dose(r, "DOSE-MAX-DAILY-PER-KG")[0]
    assert r.verdict == "review" and single.severity == daily.severity == "major"
    assert "62.5 mg/kg" in single.message and "15 mg/kg" in single.message and "2 years to < 18 years" in single.message
    assert "250 mg/kg/day" in daily.message and "75 mg/kg/day" in daily.message
    assert "WHO" in single.source and "Ofirmev" in single.source
    assert single.evidence["age_band"].startswith("child and adolescent") and single.evidence["weight_kg"] == 16
    assert "240 mg" in single.action and "1200 mg/day" in daily.action  # 15 x 16 and 75 x 16
    # the same child at 15 mg/kg every 6 hours: within every limit
    r = check(rx_checker, [{"sig": "paracetamol 240 mg po q6h"}], age_years=4, weight_kg=16)
    assert not dose(r) and r.verdict == "pass"


def test_a_child_without_a_weight_gets_a_finding_that_the_dose_cannot_be_checked(rx_checker):
    r = check(rx_checker, [{"sig": "paracetamol 240 mg po q6h"}], age_years=4)
    f = dose(r, "DOSE-WEIGHT-MISSING")[0]
    assert f.severity == "moderate" and r.verdict == "review"
    assert "cannot be checked" in f.message and "15 mg/kg per dose" in f.message and "Record the child's weight" in f.action


def _inside(row):
    """A patient age inside the row's band (the middle, in days)."""
    lo, hi = row.get("age_min_days") or 0, row.get("age_max_days") or 6574
    return {"age_days": (lo + hi) / 2}


def test_every_weight_based_paediatric_row_reports_a_missing_weight(rx_checker):
    """Consistent for all rows: whatever the drug, route and band, a child in the band with a dose and no
    weight is told the dose cannot be checked (never a silent pass)."""
    rows = [r for r in rx_checker.kb.tables["dose_limits"]
            if r["population"] == "pediatric" and (r["max_single_mg_per_kg"] or r["max_daily_mg_per_kg"])]
    assert len(rows) >= 30
    missing = []
    for row in rows:
        r = check(rx_checker, [{"drug": row["ingredient"], "dose": 1, "unit": "mg", "frequency": "daily",
                                "route": row["route"] if row["route"] != "any" else None}], **_inside(row))
        if not any(f.rule_id == "DOSE-WEIGHT-MISSING" and f.evidence["row"] == row["_row"] for f in r.findings):
            missing.append(row["_row"])
    assert not missing, missing


def test_neonate_infant_and_child_bands_of_iv_paracetamol(rx_checker):
    item = [{"drug": "acetaminophen", "dose": 50, "unit": "mg", "route": "iv", "frequency": "q6h"}]
    neo = check(rx_checker, item, age_days=10, weight_kg=3.5)  # 14.3 mg/kg, 57 mg/kg/day
    f = dose(neo, "DOSE-MAX-SINGLE-PER-KG")[0]
    assert "12.5 mg/kg" in f.message and f.evidence["age_band"] == "neonate, birth to < 29 days"
    assert dose(neo, "DOSE-MAX-DAILY-PER-KG")[0].evidence["max_daily_mg_per_kg"] == 50
    assert "43.8 mg" in f.action  # 12.5 x 3.5
    # the same 50 mg for a 6-month-old of 7.9 kg: 6.3 mg/kg, within the infant band (15 mg/kg, 60 mg/kg/day)
    assert not dose(check(rx_checker, item, age_months=6, weight_kg=7.9))
    # age given only in days still drives the age rules (ibuprofen under 6 months)
    r = check(rx_checker, [{"sig": "ibuprofen 20 mg po q8h"}], age_days=20, weight_kg=3.8)
    assert any(f.category == "age" for f in r.findings)


def test_young_infant_amoxicillin_has_its_own_lower_limit(rx_checker):
    r = check(rx_checker, [{"sig": "amoxicillin 125 mg po tid"}], age_months=2, weight_kg=5)  # 75 mg/kg/day
    f = dose(r, "DOSE-MAX-DAILY-PER-KG")[0]
    assert "30 mg/kg/day" in f.message and "birth to < 3 months" in f.message and "150 mg/day" in f.action
    # at 4 months the high-dose limit (90 mg/kg/day, AAP 2013) applies: 72 mg/kg/day passes
    assert not dose(check(rx_checker, [{"sig": "amoxicillin 250 mg po bid"}], age_months=4, weight_kg=6.9))


def test_fixed_doses_by_age_need_no_weight(rx_checker):
    r = check(rx_checker, [{"sig": "Zyrtec 10 mg daily"}], age_years=3)
    assert {f.rule_id for f in dose(r)} == {"DOSE-MAX-SINGLE", "DOSE-MAX-DAILY"}
    assert all("2 years to < 6 years" in f.message for f in dose(r))
    assert not dose(check(rx_checker, [{"sig": "loratadine 5 mg daily"}], age_years=3))
    assert not dose(check(rx_checker, [{"sig": "cetirizine 10 mg daily"}], age_years=7))  # 6 and over: adult row


def test_absolute_caps_apply_on_top_of_mg_per_kg(rx_checker):
    # albuterol syrup 2-5 years: 0.2 mg/kg three times daily but never more than 4 mg a dose
    r = check(rx_checker, [{"drug": "albuterol", "dose": 5, "unit": "mg", "frequency": "tid"}], age_years=5,
              weight_kg=26)
    assert [f.evidence["max_single_mg"] for f in dose(r, "DOSE-MAX-SINGLE")] == [4]
    assert not dose(r, "DOSE-MAX-SINGLE-PER-KG")  # 0.19 mg/kg is within 0.2 mg/kg
    # an 11-year-old of 90 kg, ibuprofen 900 mg: 10 mg/kg is within the child limit, the adult 800 mg is not
    r = check(rx_checker, [{"sig": "ibuprofen 900 mg po q8h"}], age_years=11, weight_kg=90)
    assert any(f.evidence["population"] == "adult" for f in dose(r, "DOSE-MAX-SINGLE"))
    # the maximum for this weight in the action is capped by the absolute maximum
    r = check(rx_checker, [{"drug": "albuterol", "dose": 6, "unit": "mg", "frequency": "tid"}], age_years=5,
              weight_kg=26)
    f = dose(r, "DOSE-MAX-SINGLE-PER-KG")[0]
    assert f.evidence["max_single_mg_for_weight"] == 4 and "capped at 4 mg" in f.action


def test_weight_ceiling_and_bands_outside_the_childs_age(rx_checker):
    # >= 50 kg: adult paracetamol dosing (1 g every 6 h); a 45 kg 14-year-old is still limited per kg
    assert not dose(check(rx_checker, [{"sig": "acetaminophen 1 g po q6h"}], age_years=15, weight_kg=60))
    assert dose(check(rx_checker, [{"sig": "acetaminophen 1 g po q6h"}], age_years=14, weight_kg=45),
                "DOSE-MAX-SINGLE-PER-KG")
    # younger than every band of a drug: said, not silently passed; older than every band: adult dosing
    r = check(rx_checker, [{"sig": "ibuprofen 20 mg po q8h"}], age_days=20, weight_kg=3.8)
    f = dose(r, "DOSE-PEDIATRIC-AGE-UNCOVERED")[0]
    assert f.severity == "minor" and "6 months to < 12 years" in f.message and "20 days old" in f.message
    assert not dose(check(rx_checker, [{"sig": "ibuprofen 400 mg po q8h"}], age_years=14, weight_kg=50))


def test_a_child_is_held_to_the_paediatric_per_kg_limit_not_the_adult_one(rx_checker):
    # acyclovir IV: 20 mg/kg every 8 h for 3 months-12 years (label); the adult row says 10 mg/kg
    r = check(rx_checker, [{"drug": "acyclovir", "dose": 360, "unit": "mg", "route": "iv", "frequency": "q8h"}],
              age_years=5, weight_kg=18)
    assert not dose(r)


@pytest.mark.parametrize(("patient", "field"), [
    ({"age_years": 5, "age_days": 10}, "age_days"),
    ({"age_months": 3, "age_days": 200}, "age_days"),
    ({"age_years": 1, "age_months": 30}, "age_months"),
    ({"age_days": -1}, "age_days"),
    ({"weight_kg": -4}, "weight_kg"),
])
def test_contradictory_or_impossible_patient_fields_are_refused_naming_the_field(patient, field):
    with pytest.raises(ValidationError) as e:
        Prescription.model_validate({"patient": patient, "items": [{"drug": "ibuprofen"}]})
    assert [err["loc"] for err in e.value.errors()] == [("patient", field)]


def test_consistent_ages_are_accepted_and_the_finest_is_used():
    p = Prescription.model_validate({"patient": {"age_years": 0, "age_months": 0, "age_days": 10},
                                     "items": [{"drug": "ibuprofen"}]}).patient
    assert p.age_in_days() == 10 and p.age_in_years() == 0
    p = Prescription.model_validate({"patient": {"age_months": 6}, "items": [{"drug": "ibuprofen"}]}).patient
    assert p.age_years is None and round(p.age_in_days()) == 183 and p.age_in_years() == 0.5


def test_band_text():
    assert band_text({"age_min_days": 0, "age_max_days": 28}) == "neonate, birth to < 28 days"
    assert band_text({"age_min_days": 28, "age_max_days": 730}) == "infant and child, 28 days to < 2 years"
    assert band_text({"age_min_days": 730, "age_max_days": 6574, "weight_max_kg": 50}) == \
        "child and adolescent, 2 years to < 18 years, under 50 kg"
    assert band_text({}) == "all children"
