"""The gold set and the sig-line set, scored for real.  These assert the issue's targets and can fail."""

from collections import Counter
from types import SimpleNamespace

import pytest

from evaluation.rx_eval import (
    GOLD,
    SIGS,
    evaluate_gold,
    evaluate_sigs,
    load_gold,
    load_sigs,
    summarise,
)
from training import rx_gold
from training.rx_gold import (
    CURATED_DIR,
    adult_limits,
    age_cases,
    allergy_cases,
    condition_cases,
    dose_cases,
    from_tables,
    hepatic_cases,
    hepatic_safe_controls,
    pregnancy_cases,
    read_tables,
    renal_cases,
    safe_controls,
)


@pytest.fixture(scope="module")
def gold_cases():
    return load_gold(GOLD)


def test_gold_set_shape(gold_cases):
    assert len(gold_cases) >= 300
    prov = Counter(c["provenance"].split(":")[0] for c in gold_cases)
    assert {"table", "rxsafebench", "hand-checked", "ddinter"} <= set(prov)
    assert sum(c["unsafe"] for c in gold_cases) >= 100 and sum(not c["unsafe"] for c in gold_cases) >= 50
    for c in gold_cases:
        assert c["provenance"] and "prescription" in c and isinstance(c["expected"], list)


def _current_cases(rx_checker, gold_cases):
    """The committed gold set, with its table-derived part re-derived from the tables as they are now (the
    tables are edited by another area; a stale committed copy must not hide or fake a regression)."""
    from training import rx_gold as b

    b._KB = rx_checker.kb
    fresh = b.from_tables(rx_checker.kb, b.CURATED_DIR)
    for case in fresh:
        case["prescription"]["items"] = [{k: v for k, v in it.items() if v is not None}
                                         for it in case["prescription"]["items"]]
    committed = [c for c in gold_cases if not c["provenance"].startswith("table:")]
    stale = {c["id"] for c in gold_cases if c["provenance"].startswith("table:")} ^ {c["id"] for c in fresh}
    if stale:
        print(f"note: committed gold set is stale for {len(stale)} table cases; "
              "run python -m training gold")
    return fresh + committed


def test_gold_targets(rx_checker, gold_cases):
    res = evaluate_gold(rx_checker, _current_cases(rx_checker, gold_cases))
    s = summarise(res)
    # the targets of issue 4 on the KB-derived and hand-checked cases
    assert s["core_finding_recall"] >= 0.95, res["misses"][:10]
    assert s["precision"] >= 0.90, res["false_positives"][:10]
    assert s["safe_false_alarm"] <= 0.05
    # hepatic rows (table-derived, with safe controls at grade none / below the row's grade / within the maximum)
    hep = res["per_category"]["hepatic"]
    assert hep["expected"] >= 15 and hep["found"] == hep["expected"] and hep.get("fp", 0) == 0, res["misses"][:10]
    # RxSafeBench measures KB coverage against an external source: reported, with a floor
    rxs = res["per_provenance"]["rxsafebench"]
    assert rxs["found"] / rxs["expected"] >= 0.5


def test_sig_parser_accuracy():
    rows = load_sigs(SIGS)
    assert len(rows) >= 150
    res = evaluate_sigs(rows)
    for field, acc in res["accuracy"].items():
        assert acc >= 0.95, (field, acc, [e for e in res["errors"] if e[1] == field][:5])


# ------------------------------------------------------------------------ table families, one at a time
NO_ATC = SimpleNamespace(atc_codes=lambda ingredient: [])  # a KB stand-in for the age lookup: no ATC codes


@pytest.fixture
def no_kb(monkeypatch):
    monkeypatch.setattr(rx_gold, "_KB", None)  # expected ingredients stay as written


def _dose_row(n=2, **values):
    row = {"ingredient": "x", "route": "oral", "population": "adult", "max_single_mg": None, "max_daily_mg": None,
           "max_single_mg_per_kg": None, "max_daily_mg_per_kg": None, "frequency_rule": "",
           "_row": f"dose_limits.csv#{n}"}
    return row | values


def _summary(cases):
    return [(c["id"], c["prescription"]["items"], [(e["category"], e["min_severity"]) for e in c["expected"]],
             c["unsafe"]) for c in cases]


def test_adult_limits_are_the_first_adult_oral_row():
    rows = [_dose_row(2, route="iv"), _dose_row(3), _dose_row(4, route="any"),
            _dose_row(5, ingredient="y", route="any"), _dose_row(6, ingredient="z", population="pediatric")]
    assert adult_limits(rows) == {"x": rows[1], "y": rows[3]}


def test_adult_dose_rows(no_kb):
    row = _dose_row(max_single_mg=500, max_daily_mg=800)
    weekly = _dose_row(3, ingredient="methotrexate", route="any", frequency_rule="weekly", max_single_mg=25)
    ped = _dose_row(4, population="pediatric", max_single_mg_per_kg=15)
    assert _summary(dose_cases(NO_ATC, [row, weekly, ped], [])) == [
        ("dose-single-dose_limits.csv#2", [{"drug": "x", "dose": 750.0, "unit": "mg", "route": "oral",
                                            "frequency": "once"}], [("dose", "major")], True),
        ("dose-daily-dose_limits.csv#2", [{"drug": "x", "dose": 400.0, "unit": "mg", "route": "oral",
                                           "frequency": "tid"}], [("dose", "major")], True),  # one dose too many
        ("dose-ok-dose_limits.csv#2", [{"drug": "x", "dose": 400.0, "unit": "mg", "route": "oral",
                                        "frequency": "daily"}], [], False),
        ("dose-weekly-dose_limits.csv#3", [{"drug": "methotrexate", "dose": 7.5, "unit": "mg", "route": None,
                                            "frequency": "daily"}], [("dose", "contraindicated")], True),
        ("dose-weekly-ok-dose_limits.csv#3", [{"drug": "methotrexate", "dose": 7.5, "unit": "mg", "route": None,
                                               "frequency": "once weekly"}], [], False),
        ("dose-ped-dose_limits.csv#4", [{"drug": "x", "dose": 450.0, "unit": "mg", "route": "oral",
                                         "frequency": "once"}], [("dose", "major")], True),
        # the same child without a weight: the dose cannot be checked (moderate: sent to review)
        ("dose-ped-noweight-dose_limits.csv#4", [{"drug": "x", "dose": 240.0, "unit": "mg", "route": "oral",
                                                  "frequency": "bid"}], [("dose", "moderate")], True),
        # 80% of 15 mg/kg x 20 kg, twice a day: inside the adult 800 mg/day too
        ("dose-ped-ok-dose_limits.csv#4", [{"drug": "x", "dose": 240.0, "unit": "mg", "route": "oral",
                                            "frequency": "bid"}], [], False),
    ]


def test_pediatric_rows_by_age_band(no_kb):
    """Banded paediatric rows: the child is inside the band (a neonate in days, a 4-year-old in years) at the
    median weight; over the per-dose limit, within each dose but over the daily limit, without a weight, and a
    safe control; a fixed-dose row (no mg/kg) needs no weight case."""
    neo = _dose_row(5, ingredient="y", population="pediatric", age_min_days=0, age_max_days=28,
                    max_single_mg_per_kg=15, max_daily_mg_per_kg=60)
    fixed = _dose_row(6, ingredient="z", population="pediatric", age_min_days=730, age_max_days=2191,
                      max_single_mg=5, max_daily_mg=5)
    cases = dose_cases(NO_ATC, [neo, fixed], [])
    assert [(c["id"], c["prescription"]["patient"]) for c in cases] == [
        ("dose-ped-dose_limits.csv#5", {"age_days": 10, "weight_kg": 3.7}),
        ("dose-ped-daily-dose_limits.csv#5", {"age_days": 10, "weight_kg": 3.7}),
        ("dose-ped-noweight-dose_limits.csv#5", {"age_days": 10}),
        ("dose-ped-ok-dose_limits.csv#5", {"age_days": 10, "weight_kg": 3.7}),
        ("dose-ped-dose_limits.csv#6", {"age_years": 4.0, "weight_kg": 16.3}),
        ("dose-ped-ok-dose_limits.csv#6", {"age_years": 4.0, "weight_kg": 16.3}),
    ]
    over, daily, _, ok, fixed_over, fixed_ok = (c["prescription"]["items"][0] for c in cases)
    assert over["dose"] / 3.7 > 15 and daily["dose"] / 3.7 <= 15 and daily["dose"] * 6 / 3.7 > 60
    assert ok["dose"] * 4 / 3.7 <= 60 and ok["frequency"] == "qid"
    assert fixed_over["dose"] > 5 and fixed_ok["dose"] * 2 <= 5
    assert [c["unsafe"] for c in cases] == [True, True, True, False, True, False]
    # the weight ceiling: a child at or above it takes adult dosing, so the gold child stays below it
    heavy = _dose_row(7, population="pediatric", age_min_days=2922, weight_max_kg=45, max_daily_mg_per_kg=4.4)
    assert dose_cases(NO_ATC, [heavy], [])[0]["prescription"]["patient"]["weight_kg"] < 45


def test_renal_rows_stay_inside_the_adult_limits(no_kb):
    def row(n, **values):
        return {"ingredient": "x", "egfr_min": 15, "egfr_max": 30, "measure": "crcl", "action": "max_daily",
                "max_daily_mg": 1000, "severity": "major", "_row": f"renal_dosing.csv#{n}"} | values

    rows = [row(2), row(3, ingredient="y"), row(4, action="contraindicated", egfr_min=None, egfr_max=15,
                                                measure="egfr", max_daily_mg=None, severity="contraindicated")]
    limits = {"x": {"max_single_mg": 500, "max_daily_mg": 4000}, "y": {"max_daily_mg": 1000}}
    cases = renal_cases(rows, limits)
    assert [(c["id"], c["prescription"]["patient"]) for c in cases] == [
        ("renal-renal_dosing.csv#2", {"age_years": 60, "crcl": 22.5}),
        ("renal-renal_dosing.csv#4", {"age_years": 60, "egfr": 7.5}),
    ]  # y: every dose above its renal maximum breaks its adult daily maximum
    assert cases[0]["prescription"]["items"] == [{"drug": "x", "dose": 500.0, "unit": "mg", "frequency": "tid"}]
    assert cases[1]["prescription"]["items"] == [{"drug": "x"}]


def test_hepatic_rows_and_their_safe_controls(no_kb):
    def row(n, ingredient, grade, **values):
        return {"ingredient": ingredient, "min_grade": grade, "action": "avoid", "max_daily_mg": None,
                "severity": "major", "_row": f"hepatic_dosing.csv#{n}"} | values

    rows = [row(2, "x", "mild", action="reduce_dose", max_daily_mg=100, severity="moderate"),
            row(3, "x", "severe", action="contraindicated", severity="contraindicated"), row(4, "y", "moderate")]
    cases = hepatic_cases(rows, {})
    assert [c["id"] for c in cases] == ["hepatic-hepatic_dosing.csv#2", "hepatic-ok-dose-hepatic_dosing.csv#2",
                                        "hepatic-hepatic_dosing.csv#3", "hepatic-hepatic_dosing.csv#4"]
    assert cases[0]["prescription"]["items"] == [{"drug": "x", "dose": 75.0, "unit": "mg", "frequency": "bid"}]
    assert cases[1]["prescription"]["items"] == [{"drug": "x", "dose": 100, "unit": "mg", "frequency": "daily"}]
    assert cases[1]["expected"] == [] and cases[2]["prescription"]["patient"]["hepatic_impairment"] == "severe"
    safe = hepatic_safe_controls(NO_ATC, rows, [])
    assert [(c["id"], c["prescription"]["patient"]["hepatic_impairment"]) for c in safe] == [
        ("safe-hepatic-none-hepatic_dosing.csv#2", "none"),  # below mild is none
        ("safe-hepatic-none-hepatic_dosing.csv#4", "none"), ("safe-hepatic-mild-hepatic_dosing.csv#4", "mild")]
    assert not any(c["expected"] or c["unsafe"] for c in safe)
    age_rule = {"ingredient": "y", "atc_prefix": "", "age_min_years": 18, "age_max_years": None, "severity": "minor"}
    assert [c["id"] for c in hepatic_safe_controls(NO_ATC, rows, [age_rule])] == [
        "safe-hepatic-none-hepatic_dosing.csv#2"]  # a drug an age rule flags at 50 is no safe control


def test_each_table_family_cites_its_own_tables_and_from_tables_is_them_in_order(rx_checker, monkeypatch):
    kb = rx_checker.kb
    monkeypatch.setattr(rx_gold, "_KB", kb)
    t = read_tables(CURATED_DIR)
    limits = adult_limits(t["dose_limits"])
    families = [
        (("dose_limits",), dose_cases(kb, t["dose_limits"], t["age_rules"])),
        (("renal_dosing",), renal_cases(t["renal_dosing"], limits)),
        (("hepatic_dosing",), hepatic_cases(t["hepatic_dosing"], limits)),
        (("hepatic_dosing",), hepatic_safe_controls(kb, t["hepatic_dosing"], t["age_rules"])),
        (("pregnancy_lactation",), pregnancy_cases(kb, t["pregnancy_lactation"])),
        (("age_rules",), age_cases(kb, t["age_rules"])),
        (("condition_contraindications",), condition_cases(kb, t["condition_contraindications"])),
        (("renal_dosing", "age_rules", "condition_contraindications", "pregnancy_lactation"),
         safe_controls(kb, t["renal_dosing"], t["age_rules"], t["condition_contraindications"],
                       t["pregnancy_lactation"])),
        (("allergy_classes", "cross_sensitivity"), allergy_cases(kb, t["allergy_classes"], t["cross_sensitivity"])),
    ]
    everything = []
    for tables, cases in families:
        assert cases, tables
        assert {c["provenance"].removeprefix("table:").split(".csv#")[0] for c in cases} <= set(tables)
        everything += cases
    assert not any(c["expected"] for c in families[3][1] + families[7][1])  # the safe controls
    assert [c["id"] for c in from_tables(kb, CURATED_DIR)] == [c["id"] for c in everything]
