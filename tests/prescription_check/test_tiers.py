"""Alert tiers: counselling notes instead of reviews where the cited management is counselling or monitoring."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from prescription_check import Checker, Prescription
from prescription_check.policy import Policy
from prescription_check.schemas import Finding
from prescription_check.tiers import (
    MANAGEMENT_COLUMNS,
    PRESETS,
    ManagementTable,
    ManagementTableError,
    QueueSettings,
    TierPolicy,
)

TABLE = Path(__file__).resolve().parents[2] / "datasets" / "drugs" / "interaction_management.csv"


def rx(items, **patient):
    return Prescription.model_validate({"patient": patient, "items": items})


def under(checker: Checker, preset: str) -> Checker:
    return Checker(checker.kb, checker.policy.with_queue_settings(PRESETS[preset]), None, checker.model_status)


def test_management_table_rows_are_cited_and_soften_a_major_only_for_a_combination_tablet():
    table = ManagementTable.load(TABLE)
    assert len(table.rows) >= 20
    for row in table.rows:
        assert "https://" in row.source or "http://" in row.source
        assert row.max_severity in ("moderate", "major")
    majors = [(r.a, r.b) for r in table.rows if r.max_severity == "major"]
    assert majors == [("sumatriptan", "naproxen")]  # sold as one tablet (Treximet), recommended by NICE CG150


def _write(tmp_path, **override):
    row = {"match": "pair:a|b", "management_class": "routine_monitoring", "max_severity": "moderate", "dose_drug": "",
           "max_daily_mg": "", "counselling_note": "n", "source_title": "t", "source_url": "https://x",
           "source_section": "7"}
    row.update(override)
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANAGEMENT_COLUMNS)
        w.writeheader()
        w.writerow(row)
    return path


@pytest.mark.parametrize("override, message", [
    ({"match": "a|b"}, "must start with 'pair:' or 'rule:'"),
    ({"match": "pair:a"}, "pair:<a>|<b>"),
    ({"management_class": "ignore"}, "management_class 'ignore'"),
    ({"max_severity": "contraindicated"}, "milder than contraindicated"),
    ({"dose_drug": "aspirin"}, "go together"),
    ({"source_url": ""}, "source_url is empty"),
    ({"source_url": "dailymed"}, "http(s) URL"),
    ({"management_class": "dose_within_limit"}, "needs dose_drug"),
])
def test_a_malformed_management_row_is_refused_naming_row_and_column(tmp_path, override, message):
    with pytest.raises(ManagementTableError, match="row 2") as err:
        ManagementTable.load(_write(tmp_path, **override))
    assert message in str(err.value)


def _f(sev, drugs=("a", "b"), category="interaction", rule="DDI-X"):
    return Finding(rule_id=rule, category=category, severity=sev, drugs=list(drugs), message="m")


def test_only_findings_no_worse_than_the_row_are_softened(tmp_path):
    table = ManagementTable.load(_write(tmp_path))
    policy = replace(Policy(), tiers=TierPolicy(table, PRESETS["default"]))
    moderate, major, other = _f("moderate"), _f("major"), _f("moderate", ("a", "c"))
    verdict, notes = policy.classify([moderate])
    assert verdict == "pass" and moderate.tier == "counsel" and notes[0]["management_class"] == "routine_monitoring"
    assert policy.classify([major])[0] == "review" and major.tier == "review"
    assert policy.classify([other])[0] == "review"
    blocked = _f("contraindicated")
    assert policy.classify([blocked, _f("moderate")])[0] == "block" and blocked.tier == "block"


def test_a_predicted_interaction_on_a_managed_pair_is_a_counselling_note(tmp_path):
    table = ManagementTable.load(_write(tmp_path, max_severity="major"))
    policy = replace(Policy(), tiers=TierPolicy(table, PRESETS["default"]))
    f = Finding(rule_id="DDI-PREDICTED", category="predicted_interaction", severity="major", drugs=["b", "a"],
                message="m", predicted=True, probability=0.9)
    assert policy.classify([f])[0] == "pass" and f.tier == "counsel"
    other = Finding(rule_id="DDI-PREDICTED", category="predicted_interaction", severity="major", drugs=["a", "c"],
                    message="m", predicted=True, probability=0.9)
    assert policy.classify([other])[0] == "review"


def test_a_dose_condition_that_cannot_be_confirmed_softens_nothing(tmp_path):
    table = ManagementTable.load(_write(tmp_path, dose_drug="a", max_daily_mg="150"))
    policy = replace(Policy(), tiers=TierPolicy(table, PRESETS["default"]))
    assert policy.classify([_f("moderate")], daily_mg=lambda ing: None)[0] == "review"
    assert policy.classify([_f("moderate")], daily_mg=lambda ing: 300.0)[0] == "review"
    assert policy.classify([_f("moderate")], daily_mg=lambda ing: 75.0)[0] == "pass"


def test_queue_settings_validate_and_name_the_field():
    with pytest.raises(ValueError, match="cells.interaction.moderate"):
        QueueSettings.from_dict({"cells": {"interaction": {"moderate": ["block"]}}})
    with pytest.raises(ValueError, match="cells.potion: unknown category"):
        QueueSettings.from_dict({"cells": {"potion": {"moderate": ["review"]}}})
    with pytest.raises(ValueError, match="cells.interaction.severe: unknown severity"):
        QueueSettings.from_dict({"cells": {"interaction": {"severe": ["review"]}}})
    with pytest.raises(ValueError, match="unknown field"):
        QueueSettings.from_dict({"queue": {}})
    doc = PRESETS["strict"].as_dict()
    assert QueueSettings.from_dict(doc).as_dict() == doc


def test_a_lead_can_stop_a_cell_from_queueing(tmp_path):
    relaxed = QueueSettings.from_dict({"name": "r", "cells": {"interaction": {"moderate": []}}})
    policy = Policy().with_queue_settings(relaxed)
    f = _f("moderate")
    verdict, notes = policy.classify([f])
    assert verdict == "pass" and f.tier == "counsel" and notes[0]["management_class"] == "not_queued_by_settings"
    assert policy.classify([_f("moderate", category="dose")])[0] == "review"  # other cells keep the default


def test_levothyroxine_with_calcium_is_a_counselling_note(rx_checker):
    r = rx_checker.check(rx([{"drug": "levothyroxine", "dose": 75, "unit": "mcg", "frequency": "qd"},
                             {"drug": "calcium carbonate", "dose": 1500, "unit": "mg", "frequency": "qd"}], age_years=70))
    assert r.verdict == "pass", [(f.rule_id, f.severity, f.tier) for f in r.findings]
    note = next(n for n in r.counselling_notes if set(n.drugs) == {"levothyroxine", "calcium carbonate"})
    assert note.management_class == "separate_doses" and "4 hours" in note.note and "dailymed" in note.source
    assert r.tier_policy.startswith("default")
    strict = under(rx_checker, "strict").check(rx([{"drug": "levothyroxine", "dose": 75, "unit": "mcg",
                                                    "frequency": "qd"},
                                                   {"drug": "calcium carbonate", "dose": 1500, "unit": "mg",
                                                    "frequency": "qd"}]))
    assert strict.verdict == "review" and not strict.counselling_notes


def test_dual_antiplatelet_counsels_only_at_low_aspirin_dose(rx_checker):
    low = rx_checker.check(rx([{"drug": "aspirin", "dose": 75, "unit": "mg", "frequency": "qd"},
                               {"drug": "clopidogrel", "dose": 75, "unit": "mg", "frequency": "qd"}], age_years=60))
    assert low.verdict == "pass" and any(n.management_class == "guideline_combination" for n in low.counselling_notes)
    high = rx_checker.check(rx([{"drug": "aspirin", "dose": 650, "unit": "mg", "frequency": "qid"},
                                {"drug": "clopidogrel", "dose": 75, "unit": "mg", "frequency": "qd"}], age_years=60))
    assert high.verdict == "review"
    unknown = rx_checker.check(rx([{"drug": "clopidogrel", "dose": 75, "unit": "mg", "frequency": "qd"}],
                                  age_years=60, current_medications=["aspirin"]))
    assert unknown.verdict == "review"  # the aspirin dose is unknown: no softening


def test_citalopram_over_60_counsels_within_the_limit_and_reviews_above(rx_checker):
    ok = rx_checker.check(rx([{"drug": "citalopram", "dose": 20, "unit": "mg", "frequency": "qd"}], age_years=70))
    assert ok.verdict == "pass" and ok.counselling_notes[0].rule_id == "AGE-CITALOPRAM"
    high = rx_checker.check(rx([{"drug": "citalopram", "dose": 40, "unit": "mg", "frequency": "qd"}], age_years=70))
    assert high.verdict == "review"


def test_documented_major_and_contraindicated_findings_are_untouched(rx_checker):
    r = rx_checker.check(rx([{"drug": "sildenafil", "dose": 50, "unit": "mg", "frequency": "qd"},
                             {"drug": "nitroglycerin", "dose": 0.4, "unit": "mg", "frequency": "prn"}]))
    assert r.verdict == "block" and any(f.tier == "block" for f in r.findings)
    r = rx_checker.check(rx([{"drug": "warfarin", "dose": 5, "unit": "mg", "frequency": "qd"},
                             {"drug": "aspirin", "dose": 75, "unit": "mg", "frequency": "qd"}]))
    assert r.verdict == "review"


def test_every_everyday_regimen_is_a_valid_cited_prescription():
    from evaluation.regimen_eval import load_regimens

    rows = load_regimens()
    assert len(rows) >= 50
    assert {r["split"] for r in rows} == {"dev", "heldout"}
    for r in rows:
        Prescription.model_validate(r["prescription"])
        assert r["expectation"] == "no_review"
        urls = r["guideline_url"].split(" | ")
        assert all(u.startswith("https://") for u in urls) and len(urls) == len(r["guideline"].split(" | "))


def test_everyday_regimens_under_the_shipped_policies(rx_checker):
    """Regression guard on the figures reported in docs/prescription-check.md (rules only)."""
    from evaluation.regimen_eval import evaluate_regimens, load_regimens

    rows = load_regimens()
    default = evaluate_regimens(rx_checker, rows)["total"]
    strict = evaluate_regimens(under(rx_checker, "strict"), rows)["total"]
    assert default["sent"] <= 3 < strict["sent"]
    assert default["notes"] > 0 and strict["notes"] == 0
