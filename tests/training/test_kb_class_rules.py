"""Class-level interaction rules: expansion through cited class memberships, precedence, and the finding."""

import pytest

from prescription_check import Prescription
from training.kb_build import CURATED_DIR, KBBuild, KBBuildError, add_class_interactions, read_curated


def _build(settings, classes, rules, atc=None, names=None, ddinter=None, interactions=None, l5=None):
    b = KBBuild(settings, CURATED_DIR)
    b.names = names or {}
    b.atc = atc or {}
    b.l5 = l5 or []
    b.ddinter = ddinter or {}
    b.interactions = interactions or {}
    b.curated = {"interaction_classes.csv": classes, "interaction_class_rules.csv": rules}
    return b


def _member(cid, ingredient="", atc="", row=2):
    return {"class_id": cid, "class_name": cid.upper(), "ingredient": ingredient, "atc_prefix": atc,
            "licence": "L", "source": f"src-{cid}", "_row": f"interaction_classes.csv#{row}"}


def _rule(rid, a, b, sev="major", row=2):
    return {"rule_id": rid, "class_a": a, "class_b": b, "severity": sev, "message": f"msg {rid}",
            "management": "m", "licence": "L", "origin": "label", "source": f"rule-src {rid}",
            "_row": f"interaction_class_rules.csv#{row}"}


def test_rules_expand_through_atc_and_listed_members(settings):
    classes = [_member("nsaid", atc="M01AE", row=2), _member("anticoag", ingredient="Warfarin", row=3)]
    b = _build(settings, classes, [_rule("R1", "nsaid", "anticoag")],
               atc={"ibuprofen": ["M01AE01"], "naproxen": ["M01AE02"], "esomeprazole": ["M01AE52", "A02BC05"],
                    "warfarin": ["B01AA03"]},
               names={"warfarin": ["warfarin"]})
    add_class_interactions(b)
    assert set(b.interactions) == {"ibuprofen|warfarin", "naproxen|warfarin"}  # a 5x combination code is no member
    e = b.interactions["ibuprofen|warfarin"]
    assert e == {"severity": "major", "origin": "class_rule", "rule": "R1",
                 "members": {"ibuprofen": "interaction_classes.csv#2", "warfarin": "interaction_classes.csv#3"}}
    assert b.class_rules["R1"]["source"] == "rule-src R1"
    assert b.class_members["interaction_classes.csv#2"] == {"class_id": "nsaid", "source": "src-nsaid",
                                                            "licence": "L"}


def test_a_synonym_slip_does_not_make_a_drug_a_class_member(settings):
    # drug_ner maps "clofezone" (M01AA05) to rabeprazole; rabeprazole has a WHO code of its own name
    b = _build(settings, [_member("nsaid", atc="M01A"), _member("x", ingredient="warfarin", row=3)],
               [_rule("R1", "nsaid", "x")], atc={"rabeprazole": ["A02BC04", "M01AA05"], "warfarin": ["B01AA03"],
                                                 "acetaminophen": ["M01AX01"]},
               names={"warfarin": ["warfarin"]},
               l5=[("A02BC04", "rabeprazole"), ("M01AA05", "clofezone"), ("M01AX01", "paracetamol")])
    add_class_interactions(b)
    assert set(b.interactions) == {"acetaminophen|warfarin"}  # a synonym with no own-name code still counts


def test_most_severe_rule_wins_seed_and_ddinter_precedence(settings):
    classes = [_member("a", ingredient="x", row=2), _member("b", ingredient="y", row=3),
               _member("b", ingredient="z", row=4)]
    rules = [_rule("MOD", "a", "b", "moderate", row=2), _rule("MAJ", "drug:x", "drug:y", "major", row=3)]
    b = _build(settings, classes, rules, names={k: [k] for k in "xyz"},
               ddinter={"x|z": "Major"}, interactions={"x|y": {"severity": "contraindicated", "origin": "seed"}})
    add_class_interactions(b)
    assert b.interactions["x|y"] == {"severity": "contraindicated", "origin": "seed"}  # a more severe seed row stays
    assert b.interactions["x|z"]["severity"] == "major" and b.interactions["x|z"]["ddinter_level"] == "Major"
    assert b.interactions["x|z"]["rule"] == "MOD"


def test_unknown_class_is_a_build_error(settings):
    b = _build(settings, [_member("a", ingredient="x")], [_rule("R", "a", "nope")], names={"x": ["x"]})
    with pytest.raises(KBBuildError, match="'nope' is neither a class"):
        add_class_interactions(b)


def test_committed_tables_validate_and_every_rule_refers_to_a_class():
    classes = read_curated("interaction_classes.csv")
    rules = read_curated("interaction_class_rules.csv")
    ids = {r["class_id"] for r in classes}
    assert len(rules) >= 40 and len(ids) >= 30
    for r in rules:
        for col in ("class_a", "class_b"):
            assert r[col].startswith("drug:") or r[col] in ids, f"{r['_row']}: {r[col]}"
        assert r["source_url"].startswith("https://") and r["source_section"], r["_row"]
    for r in classes:
        assert r["source_url"].startswith("https://") and r["licence"], r["_row"]
    assert len({r["rule_id"] for r in rules}) == len(rules)


@pytest.mark.parametrize("a,b,severity,rule", [
    ("moclobemide", "sertraline", "contraindicated", "DDI-CLASS-ONC-MAOI-SEROTONERGIC"),
    ("ibuprofen", "apixaban", "major", "DDI-CLASS-LBL-NSAID-ANTICOAGULANT"),
    ("ziprasidone", "azithromycin", "contraindicated", "DDI-CLASS-ONC-QT-HIGH-RISK"),
    ("ciprofloxacin", "calcium carbonate", "moderate", "DDI-CLASS-LBL-CHELATION-FLUOROQUINOLONE"),
])
def test_checker_reports_class_rule_findings_with_member_citations(rx_checker, a, b, severity, rule):
    res = rx_checker.check(Prescription.model_validate({"items": [{"drug": a}, {"drug": b}]}))
    hits = [f for f in res.findings if f.category == "interaction" and set(f.drugs) == {a, b}]
    assert hits, [f.rule_id for f in res.findings]
    f = hits[0]
    assert (f.rule_id, f.severity, f.predicted) == (rule, severity, False)
    assert f.evidence["origin"] == "class_rule" and f.evidence["licence"]
    assert f.source and f.action and "class " in f.message
    assert any("membership_source" in m for m in f.evidence["members"].values())
