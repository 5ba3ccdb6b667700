"""Each rule category on a small real prescription (real KB built from the real tables)."""

from prescription_check import Prescription


def check(checker, items, **patient):
    return checker.check(Prescription.model_validate({"patient": patient, "items": items}))


def cats(result, min_rank=2):
    from prescription_check import severity_rank

    return {(f.category, tuple(f.drugs)) for f in result.findings if severity_rank(f.severity) <= min_rank}


def test_interaction_with_current_medication(rx_checker):
    r = check(rx_checker, [{"drug": "ibuprofen", "dose": 400, "unit": "mg", "frequency": "tid"}],
              age_years=60, current_medications=["Coumadin"])
    f = next(f for f in r.findings if f.category == "interaction")
    assert set(f.drugs) == {"ibuprofen", "warfarin"} and f.severity == "major"
    assert f.source and f.action


def test_ddinter_interaction_cites_ddinter(rx_checker):
    r = check(rx_checker, [{"drug": "simvastatin"}, {"drug": "clarithromycin"}], age_years=50)
    f = next(f for f in r.findings if f.category == "interaction")
    assert f.severity in {"major", "contraindicated"}
    assert "simvastatin" in f.drugs and "clarithromycin" in f.drugs


def test_duplicate_same_ingredient_and_class(rx_checker):
    r = check(rx_checker, [{"drug": "Tylenol"}, {"drug": "Percocet"}, {"drug": "omeprazole"}], age_years=40,
              current_medications=["pantoprazole"])
    assert ("duplicate", ("acetaminophen",)) in cats(r)
    assert ("duplicate", ("omeprazole", "pantoprazole")) in cats(r)


def test_allergy_direct_class_and_cross(rx_checker):
    r = check(rx_checker, [{"drug": "amoxicillin"}], age_years=30, allergies=["amoxicillin"])
    assert any(f.category == "allergy" and f.severity == "contraindicated" for f in r.findings)
    assert r.verdict == "block"
    r = check(rx_checker, [{"drug": "Augmentin"}], age_years=30, allergies=["penicillin"])
    assert any(f.category == "allergy" and "amoxicillin" in f.drugs for f in r.findings)
    if "cephalosporin" in " ".join(rx_checker.kb.allergy_classes):
        r = check(rx_checker, [{"drug": "cephalexin"}], age_years=30, allergies=["penicillin"])
        assert any(f.category == "allergy" and f.rule_id.startswith("ALLERGY-CROSS") for f in r.findings)
    r = check(rx_checker, [{"drug": "cephalexin"}], age_years=30, allergies=["sulfa"])
    assert not any(f.category == "allergy" and f.severity != "info" for f in r.findings)


def test_dose_single_daily_units_and_weekly(rx_checker):
    r = check(rx_checker, [{"sig": "acetaminophen 1 g po q4h"}], age_years=40)  # 6 g/day
    f = next(f for f in r.findings if f.category == "dose")
    assert f.evidence["daily_mg"] == 6000
    r = check(rx_checker, [{"sig": "acetaminophen 1 g po q8h"}], age_years=40)  # 3 g/day: within limits
    assert not any(f.category == "dose" for f in r.findings)
    r = check(rx_checker, [{"sig": "Tylenol ES 2 tabs q4h prn"}], age_years=40)  # 2 x 500 mg x 6
    assert any(f.category == "dose" and f.evidence["daily_mg"] == 6000 for f in r.findings)
    r = check(rx_checker, [{"sig": "methotrexate 2.5 mg po daily"}], age_years=55)
    f = next(f for f in r.findings if f.rule_id == "DOSE-FREQ-WEEKLY")
    assert f.severity == "contraindicated" and r.verdict == "block"
    r = check(rx_checker, [{"sig": "methotrexate 2.5 mg po once weekly"}], age_years=55)
    assert not any(f.category == "dose" for f in r.findings)


def test_pediatric_mg_per_kg(rx_checker):
    row = next(r for r in rx_checker.kb.tables["dose_limits"]
               if r["population"] == "pediatric" and r["max_single_mg_per_kg"] and r["route"] in ("oral", "any")
               and (r.get("age_min_days") or 0) <= 6 * 365.25 < (r.get("age_max_days") or 1e9)  # a 6-year-old's band
               and (r.get("weight_max_kg") or 1e9) > 20)
    dose = row["max_single_mg_per_kg"] * 20 * 2
    r = check(rx_checker, [{"drug": row["ingredient"], "dose": dose, "unit": "mg", "frequency": "once",
                            "route": "oral"}], age_years=6, weight_kg=20)
    assert any(f.rule_id == "DOSE-MAX-SINGLE-PER-KG" for f in r.findings)


def test_renal_band(rx_checker):
    r = check(rx_checker, [{"drug": "metformin", "dose": 500, "unit": "mg", "frequency": "bid"}], age_years=70,
              egfr=20)
    assert any(f.category == "renal" and f.severity == "contraindicated" for f in r.findings)
    r = check(rx_checker, [{"drug": "metformin", "dose": 500, "unit": "mg", "frequency": "bid"}], age_years=70,
              egfr=90)
    assert not any(f.category == "renal" for f in r.findings)


def _hepatic(result):
    return [f for f in result.findings if f.category == "hepatic"]


def test_hepatic_grade_and_worse_not_below_or_none(rx_checker):
    # bosentan: "avoid" from moderate (Child-Pugh B) up; nothing for mild, none, or an unstated grade
    for grade in ("moderate", "severe"):
        fs = _hepatic(check(rx_checker, [{"drug": "Tracleer"}], age_years=50, hepatic_impairment=grade))
        assert [f.drugs for f in fs] == [["bosentan"]] and fs[0].severity == "major", grade
        f = fs[0]
        assert f.rule_id == "HEPATIC-BOSENTAN-AVOID" and f.evidence["hepatic_impairment"] == grade
        assert f.evidence["min_grade"] == "moderate" and f.evidence["row"].startswith("hepatic_dosing.csv#")
        assert "Tracleer" in f.source and "dailymed" in f.source and f.action
    for grade in ("mild", "none"):
        assert not _hepatic(check(rx_checker, [{"drug": "Tracleer"}], age_years=50, hepatic_impairment=grade))
    assert not _hepatic(check(rx_checker, [{"drug": "Tracleer"}], age_years=50))
    # valproate from mild up: a contraindication blocks, also through a brand and salt
    r = check(rx_checker, [{"drug": "Depakote", "dose": 500, "unit": "mg", "frequency": "bid"}], age_years=40,
              hepatic_impairment="mild")
    assert [(f.severity, f.drugs) for f in _hepatic(r)] == [("contraindicated", ["valproic acid"])]
    assert r.verdict == "block"


def test_hepatic_row_for_the_worse_grade_supersedes(rx_checker):
    by_grade = {}
    for grade in ("mild", "moderate", "severe"):
        fs = _hepatic(check(rx_checker, [{"drug": "celecoxib", "dose": 100, "unit": "mg", "frequency": "bid"}],
                            age_years=50, hepatic_impairment=grade))
        by_grade[grade] = [f.rule_id for f in fs]
    assert by_grade == {"mild": [], "moderate": ["HEPATIC-CELECOXIB-REDUCE_DOSE"],
                        "severe": ["HEPATIC-CELECOXIB-AVOID"]}


def test_hepatic_daily_dose_limit(rx_checker):
    # ondansetron, severe impairment: at most 8 mg/day
    over = _hepatic(check(rx_checker, [{"sig": "ondansetron 8 mg po bid"}], age_years=50,
                          hepatic_impairment="severe"))
    assert len(over) == 1 and over[0].evidence["daily_mg"] == 16 and over[0].evidence["max_daily_mg"] == 8
    assert "16 mg/day > 8 mg/day" in over[0].message
    assert not _hepatic(check(rx_checker, [{"sig": "ondansetron 4 mg po bid"}], age_years=50,
                              hepatic_impairment="severe"))
    assert not _hepatic(check(rx_checker, [{"sig": "ondansetron 8 mg po bid"}], age_years=50,
                              hepatic_impairment="moderate"))
    # no computable daily dose: reported, saying the dose could not be checked
    f = _hepatic(check(rx_checker, [{"drug": "ondansetron"}], age_years=50, hepatic_impairment="severe"))
    assert len(f) == 1 and "could not be computed" in f[0].message
    # zolpidem: 5 mg/day from mild; 10 mg is flagged, 5 mg is not
    assert _hepatic(check(rx_checker, [{"sig": "zolpidem 10 mg qhs"}], age_years=50, hepatic_impairment="mild"))
    assert not _hepatic(check(rx_checker, [{"sig": "zolpidem 5 mg qhs"}], age_years=50,
                              hepatic_impairment="moderate"))


def test_pregnancy_age_condition(rx_checker):
    kb = rx_checker.kb
    if kb.tables.get("pregnancy_lactation"):
        r = check(rx_checker, [{"drug": "lisinopril"}], age_years=30, pregnant=True, trimester=2)
        assert any(f.category == "pregnancy" for f in r.findings)
        r = check(rx_checker, [{"drug": "lisinopril"}], age_years=30, pregnant=False)
        assert not any(f.category == "pregnancy" for f in r.findings)
    if kb.tables.get("condition_contraindications"):
        r = check(rx_checker, [{"drug": "ibuprofen"}], age_years=50, conditions=["active peptic ulcer"])
        assert any(f.category == "contraindication" for f in r.findings)
        r = check(rx_checker, [{"drug": "ibuprofen"}], age_years=50, conditions=["K25.4"])
        assert any(f.category == "contraindication" for f in r.findings)
    if kb.tables.get("age_rules"):
        r = check(rx_checker, [{"drug": "diphenhydramine"}], age_years=80)
        assert any(f.category == "age" for f in r.findings)
        r = check(rx_checker, [{"drug": "diphenhydramine"}], age_years=40)
        assert not any(f.category == "age" for f in r.findings)


def test_allergy_text_with_reaction(rx_checker):
    r = check(rx_checker, [{"drug": "amoxicillin"}], age_years=30, allergies=["Penicillin (rash)"])
    assert r.verdict == "block"
    r = check(rx_checker, [{"drug": "Bactrim DS"}], age_years=30, allergies=["allergic to sulfa drugs"])
    assert any(f.category == "allergy" and "sulfamethoxazole" in f.drugs for f in r.findings)
    r = check(rx_checker, [{"drug": "amoxicillin"}], age_years=30, allergies=["Zorblaxamine"])
    assert any(f.rule_id == "ALLERGY-UNRECOGNISED" for f in r.findings)


def test_pregnancy_unknown_trimester_reports_worst(rx_checker):
    rows = rx_checker.kb.rows_for("pregnancy_lactation", "lisinopril")
    if not rows:
        return
    worst = min(rows, key=lambda r: ["contraindicated", "major", "moderate", "minor", "info"].index(r["severity"]))
    r = check(rx_checker, [{"drug": "lisinopril"}], age_years=30, pregnant=True)
    f = next(f for f in r.findings if f.category == "pregnancy")
    assert f.severity == worst["severity"]


def test_negated_condition_does_not_fire(rx_checker):
    if not rx_checker.kb.tables.get("condition_contraindications"):
        return
    r = check(rx_checker, [{"drug": "ibuprofen"}], age_years=50, conditions=["no history of peptic ulcer"])
    assert not any(f.category == "contraindication" for f in r.findings)
    r = check(rx_checker, [{"drug": "ibuprofen"}], age_years=50, conditions=["history of peptic ulcer"])
    assert any(f.category == "contraindication" for f in r.findings)


def test_structured_route_spelling_and_adult_cap_for_children(rx_checker):
    a = check(rx_checker, [{"drug": "acetaminophen", "dose": 1000, "unit": "mg", "route": "PO", "frequency": "q4h"}],
              age_years=40)
    b = check(rx_checker, [{"drug": "acetaminophen", "dose": 1000, "unit": "mg", "route": "oral", "frequency": "q4h"}],
              age_years=40)
    assert [f.rule_id for f in a.findings if f.category == "dose"] == [f.rule_id for f in b.findings
                                                                      if f.category == "dose"]
    assert a.items[0].route == "oral"
    # a 16-year-old, 70 kg: 6 g/day acetaminophen exceeds the adult daily maximum too
    r = check(rx_checker, [{"drug": "acetaminophen", "dose": 1000, "unit": "mg", "frequency": "q4h"}], age_years=16,
              weight_kg=70)
    assert any(f.category == "dose" and f.evidence.get("population") == "adult" for f in r.findings)
