import pytest
from pydantic import ValidationError

from prescription_check import Checker, Prescription
from prescription_check.kb import KBError
from prescription_check.policy import Policy
from prescription_check.schemas import Finding


def rx(items, **patient):
    return Prescription.model_validate({"patient": patient, "items": items})


def test_safe_prescription_passes(rx_checker):
    r = rx_checker.check(rx([{"sig": "amlodipine 5 mg po daily"}], age_years=50))
    assert r.verdict == "pass"
    assert r.kb_version == rx_checker.kb_version
    assert r.model_status.startswith("rules-only")
    assert r.items[0].ingredients == ["amlodipine"] and r.items[0].daily_mg == 5


def test_unrecognised_and_unparsed_are_findings(rx_checker):
    r = rx_checker.check(rx([{"drug": "Qwertazine", "dose": 10, "unit": "mg"}, {"sig": "take as directed"}]))
    categories = {f.category for f in r.findings}
    assert {"unrecognised_drug", "unparsed_sig"} <= categories
    assert r.verdict == "review"


def test_findings_sorted_most_severe_first(rx_checker):
    r = rx_checker.check(rx([{"sig": "methotrexate 2.5mg daily"}, {"sig": "ibuprofen 800 mg q6h"}],
                            age_years=70, egfr=25, current_medications=["warfarin"]))
    ranks = [Checker.severity_rank(f.severity) for f in r.findings]
    assert ranks == sorted(ranks)
    assert r.verdict == "block"


def test_input_validation_names_the_field():
    with pytest.raises(ValidationError, match="age_years"):
        rx([{"drug": "x"}], age_years=-3)
    with pytest.raises(ValidationError, match="drug' or 'sig"):
        rx([{"dose": 5}])
    with pytest.raises(ValidationError, match="extra"):
        Prescription.model_validate({"items": [{"drug": "x", "dosage": 3}]})
    with pytest.raises(ValidationError, match="items"):
        Prescription.model_validate({"items": []})


def _f(sev, predicted=False, p=None):
    return Finding(rule_id="x", category="predicted_interaction" if predicted else "interaction", severity=sev,
                   drugs=["a", "b"], message="m", predicted=predicted, probability=p)


def test_policy_defaults_and_validation():
    pol = Policy()
    assert pol.verdict([]) == "pass"
    assert pol.verdict([_f("minor")]) == "pass"
    assert pol.verdict([_f("moderate")]) == "review"
    assert pol.verdict([_f("contraindicated"), _f("minor")]) == "block"
    assert pol.verdict([_f("major", True, 0.9)]) == "review"
    assert pol.verdict([_f("major", True, 0.3)]) == "pass"
    strict = Policy.validated(["contraindicated", "major"], ["moderate"])
    assert strict.verdict([_f("major")]) == "block"
    with pytest.raises(ValueError, match="unknown severities"):
        Policy.validated(["contraindicated"], ["severe"])


class _FakeDDI:
    """A stand-in for H7's predictor interface (the real one is tested in its own area)."""

    version = "7"

    def knows(self, ingredient):
        return True

    def predict_pairs(self, pairs):
        return [{"major": 0.8, "moderate": 0.15, "minor": 0.05} for _ in pairs]


def test_predicted_interactions_only_for_pairs_without_kb_entry(rx_checker):
    checker = Checker(rx_checker.kb, rx_checker.policy, _FakeDDI())
    # amlodipine + "glorbutrin"? use two drugs with no documented interaction
    common = ["amlodipine", "montelukast", "cetirizine", "famotidine", "loratadine", "tamsulosin", "finasteride",
              "latanoprost", "mupirocin", "nystatin", "docusate", "cholecalciferol", "folic acid", "albuterol"]
    pairs_without = next((a, b) for i, a in enumerate(common) for b in common[i + 1:]
                         if rx_checker.kb.interaction(a, b) is None)
    r = checker.check(rx([{"drug": pairs_without[0]}, {"drug": pairs_without[1]}], age_years=40))
    pf = [f for f in r.findings if f.category == "predicted_interaction"]
    assert pf and pf[0].predicted and pf[0].probability == pytest.approx(0.8)
    assert "not a documented interaction" in pf[0].message
    assert r.verdict == "review" and r.model_version == "7"
    r = checker.check(rx([{"drug": "warfarin"}, {"drug": "aspirin"}], age_years=40))
    assert not any(f.category == "predicted_interaction" and set(f.drugs) == {"warfarin", "aspirin"}
                   for f in r.findings)


class _FakeDetectorDDI(_FakeDDI):
    """A predictor with an interaction detector: 'interaction' is the calibrated probability."""

    detector_threshold = 0.6

    def predict_pairs(self, pairs):
        return [{"major": 0.9, "moderate": 0.08, "minor": 0.02, "interaction": 0.7 if i == 0 else 0.4}
                for i, _ in enumerate(pairs)]


def test_detector_gates_predicted_findings_and_caps_their_severity(rx_checker):
    checker = Checker(rx_checker.kb, rx_checker.policy, _FakeDetectorDDI())
    common = ["amlodipine", "montelukast", "cetirizine", "famotidine", "loratadine", "tamsulosin", "finasteride",
              "latanoprost", "mupirocin", "nystatin", "docusate", "cholecalciferol", "folic acid", "albuterol"]
    free = [(a, b, c) for i, a in enumerate(common) for j, b in enumerate(common[i + 1:], i + 1)
            for c in common[j + 1:]
            if all(rx_checker.kb.interaction(x, y) is None for x, y in ((a, b), (a, c), (b, c)))]
    a, b, c = free[0]
    r = checker.check(rx([{"drug": a}, {"drug": b}, {"drug": c}], age_years=40))
    pf = [f for f in r.findings if f.category == "predicted_interaction"]
    assert len(pf) == 1  # only the first pair (p=0.7) reaches the threshold 0.6; the others (0.4) are silent
    f = pf[0]
    assert f.severity == "moderate"  # major 0.9 given an interaction, but a prediction is never graded major
    assert f.probability == pytest.approx(0.7) and "Possible interaction" in f.message and "(p=0.70)" in f.message
    assert f.evidence["threshold"] == 0.6 and f.evidence["severity_probabilities"]["major"] == 0.9
    assert r.verdict == "pass"  # a predicted moderate never sends to review under the default policy


def test_load_existing_artefact(tmp_path, rx_checker):
    # Checker.load reads an existing artefact given by path; the version is the content hash
    c = Checker.load(rx_checker.kb.path, warm=False)
    assert c.kb_version == rx_checker.kb_version
    assert c.model_status == "rules-only: no DDI model given"
    with pytest.raises(KBError, match="does not exist"):
        Checker.load(tmp_path / "missing.json")


def test_sig_and_drug_disagree_and_unknown_frequency(rx_checker):
    r = rx_checker.check(rx([{"drug": "cephalexin", "sig": "amoxicillin 500 mg po tid"}], age_years=40))
    assert any(f.rule_id == "SIG-DRUG-MISMATCH" for f in r.findings) and r.verdict == "review"
    r = rx_checker.check(rx([{"drug": "metformin", "dose": 500, "unit": "mg", "frequency": "whenever"}]))
    f = next(f for f in r.findings if f.rule_id == "FREQUENCY-UNPARSED")
    assert f.severity == "minor" and r.items[0].daily_mg is None


def test_partial_and_fuzzy_matches_are_reported(rx_checker):
    r = rx_checker.check(rx([{"drug": "Tylenol Cold Flu Max"}, {"drug": "amoxicilin"}]))
    rules = {f.rule_id: f for f in r.findings}
    assert rules["DRUG-PARTIAL-MATCH"].severity == "minor" and "cold flu max" in rules["DRUG-PARTIAL-MATCH"].message
    assert "amoxicillin" in rules["DRUG-FUZZY-MATCH"].message
    assert [i.match for i in r.items] == ["partial", "fuzzy"]


def test_strengths_written_in_the_product_name(rx_checker):
    r = rx_checker.check(rx([{"sig": "Norco 5/325 2 tabs q4h prn"}]))
    assert r.items[0].ingredient_dose_mg == {"hydrocodone": 10, "acetaminophen": 650}
    assert r.items[0].ingredient_daily_mg["acetaminophen"] == 3900
    r = rx_checker.check(rx([{"drug": "acetaminophen 500 mg", "dose": 3, "unit": "tab", "frequency": "q4h"}]))
    assert r.items[0].ingredient_daily_mg == {"acetaminophen": 9000}
    assert any(f.category == "dose" for f in r.findings)
