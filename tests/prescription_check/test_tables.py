"""Schema and content validation of the curated, cited prescription KB tables in datasets/drugs/.

These tests read the CSV files exactly as the KB build does (csv.DictReader, UTF-8) and fail on any
row that breaks the documented schema (datasets/drugs/TABLES.md): missing columns, values outside the
allowed enums, inconsistent numbers, duplicate keys, missing or non-https citations, names that are
not lowercase canonical ingredients.  A handful of clinical anchor rows are checked too, so that a
regeneration that silently drops them fails.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import pytest

from training.sources import source_file

TABLE_DIR = Path(__file__).resolve().parents[2] / "datasets" / "drugs"

SOURCE_COLS = ["source_title", "source_url", "source_section"]
SCHEMAS: dict[str, list[str]] = {
    "dose_limits.csv": ["ingredient", "route", "population", "age_min_days", "age_max_days", "weight_max_kg",
                        "max_single_mg", "max_daily_mg",
                        "max_single_mg_per_kg", "max_daily_mg_per_kg", "frequency_rule",
                        "indication_note", *SOURCE_COLS],
    "renal_dosing.csv": ["ingredient", "egfr_min", "egfr_max", "measure", "action", "max_daily_mg",
                         "severity", "message", *SOURCE_COLS],
    "hepatic_dosing.csv": ["ingredient", "min_grade", "action", "max_daily_mg", "severity", "message",
                           *SOURCE_COLS],
    "pregnancy_lactation.csv": ["ingredient", "atc_prefix", "context", "trimester", "severity",
                                "message", *SOURCE_COLS],
    "age_rules.csv": ["ingredient", "atc_prefix", "age_min_years", "age_max_years", "severity",
                      "message", *SOURCE_COLS],
    "condition_contraindications.csv": ["ingredient", "atc_prefix", "condition_terms",
                                        "icd10_prefixes", "severity", "message", *SOURCE_COLS],
    "allergy_classes.csv": ["class_id", "name", "atc_prefixes", "ingredients", "aliases", *SOURCE_COLS],
    "cross_sensitivity.csv": ["allergy_class", "cross_class", "severity", "message", *SOURCE_COLS],
    "interactions_curated.csv": ["drug_a", "drug_b", "severity", "message", "management", *SOURCE_COLS],
    "interaction_classes.csv": ["class_id", "class_name", "ingredient", "atc_prefix", *SOURCE_COLS, "licence"],
    "interaction_class_rules.csv": ["rule_id", "class_a", "class_b", "severity", "message", "management",
                                    *SOURCE_COLS, "licence", "origin"],
}

SEVERITIES = {"contraindicated", "major", "moderate", "minor", "info"}
ROUTES = {"oral", "iv", "im", "sc", "rectal", "inhaled", "topical", "any"}
POPULATIONS = {"adult", "pediatric"}
FREQUENCY_RULES = {"", "weekly", "once_daily", "intermittent"}
RENAL_ACTIONS = {"contraindicated", "avoid", "reduce_dose", "max_daily"}
HEPATIC_ACTIONS = {"contraindicated", "avoid", "reduce_dose", "caution"}
ATC_PREFIX = re.compile(r"^[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?$")
ICD10_PREFIX = re.compile(r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?$")
NAME = re.compile(r"^[a-z0-9][a-z0-9 ,'()./-]*[a-z0-9)]$")


def load(name: str) -> list[dict[str, str]]:
    path = TABLE_DIR / name
    assert path.exists(), f"missing table {path}"
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == SCHEMAS[name], f"{name}: header {reader.fieldnames} != {SCHEMAS[name]}"
        rows = list(reader)
    assert rows, f"{name} is empty"
    for i, row in enumerate(rows, start=2):
        assert None not in row and all(v is not None for v in row.values()), f"{name}:{i} wrong column count"
    return rows


def num(value: str, where: str) -> float | None:
    if value == "":
        return None
    try:
        out = float(value)
    except ValueError:
        pytest.fail(f"{where}: {value!r} is not a number")
    assert out >= 0, f"{where}: negative value {value}"
    return out


def check_name(value: str, where: str) -> None:
    assert value == value.strip() and "  " not in value, f"{where}: stray whitespace in {value!r}"
    assert NAME.match(value), f"{where}: ingredient {value!r} must be a lowercase generic name"


def one_target(row: dict[str, str], where: str) -> None:
    ing, atc = row["ingredient"], row["atc_prefix"]
    assert bool(ing) != bool(atc), f"{where}: exactly one of ingredient / atc_prefix must be filled"
    if ing:
        check_name(ing, where)
    else:
        assert ATC_PREFIX.match(atc), f"{where}: bad ATC prefix {atc!r}"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_row_is_cited(name):
    for i, row in enumerate(load(name), start=2):
        where = f"{name}:{i}"
        assert row["source_title"].strip(), f"{where}: empty source_title"
        assert row["source_url"].startswith("https://") and " " not in row["source_url"], \
            f"{where}: source_url must be an https:// URL, got {row['source_url']!r}"
        assert row["source_section"].strip(), f"{where}: empty source_section"
        if "severity" in row:
            assert row["severity"] in SEVERITIES, f"{where}: severity {row['severity']!r}"
        if "message" in row:
            assert len(row["message"]) >= 20, f"{where}: message too short to act on"


def test_dose_limits():
    rows = load("dose_limits.csv")
    keys = set()
    limited = set()
    bands: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for i, row in enumerate(rows, start=2):
        where = f"dose_limits.csv:{i}"
        check_name(row["ingredient"], where)
        assert row["route"] in ROUTES, f"{where}: route {row['route']!r}"
        assert row["population"] in POPULATIONS, f"{where}: population {row['population']!r}"
        assert row["frequency_rule"] in FREQUENCY_RULES, f"{where}: frequency_rule {row['frequency_rule']!r}"
        key = (row["ingredient"], row["route"], row["population"], row["age_min_days"], row["age_max_days"])
        assert key not in keys, f"{where}: duplicate key {key}"
        keys.add(key)
        lo, hi, wmax = num(row["age_min_days"], where), num(row["age_max_days"], where), num(row["weight_max_kg"], where)
        if row["population"] == "adult":
            assert lo is None and hi is None and wmax is None, f"{where}: age band / weight ceiling on an adult row"
        else:
            assert lo is None or hi is None or lo < hi, f"{where}: empty age band {lo}-{hi}"
            assert hi is None or hi <= 6575, f"{where}: a paediatric band ends by 18 years (6575 days)"
            bands[(row["ingredient"], row["route"])].append((lo or 0, hi if hi is not None else 1e9, where))
        single, daily = num(row["max_single_mg"], where), num(row["max_daily_mg"], where)
        single_kg, daily_kg = num(row["max_single_mg_per_kg"], where), num(row["max_daily_mg_per_kg"], where)
        for v in (single, daily, single_kg, daily_kg):
            assert v is None or v > 0, f"{where}: a limit of 0 is meaningless; leave it empty"
        if single is not None and daily is not None and row["frequency_rule"] not in {"weekly", "intermittent"}:
            assert single <= daily, f"{where}: max_single_mg {single} > max_daily_mg {daily}"
        if single_kg is not None and daily_kg is not None:
            assert single_kg <= daily_kg, f"{where}: per-kg single > per-kg daily"
        if daily_kg is not None:
            assert daily_kg <= 150, f"{where}: implausible {daily_kg} mg/kg/day"
        if any(v is not None for v in (single, daily, single_kg, daily_kg)):
            limited.add(row["ingredient"])
        else:
            assert "no labeled maximum" in row["indication_note"], \
                f"{where}: a row without any limit must say why in indication_note"
        if row["frequency_rule"] == "weekly":
            assert single is not None, f"{where}: a weekly rule needs the weekly (single) maximum"
    assert len(limited) >= 100, f"only {len(limited)} ingredients with a numeric dose limit (need >= 100)"
    for (ing, route), spans in bands.items():  # one paediatric row per age: the bands of a drug never overlap
        spans.sort()
        for (lo1, hi1, w1), (lo2, _hi2, w2) in zip(spans, spans[1:]):
            assert hi1 <= lo2, f"{ing} {route}: paediatric age bands overlap ({w1} and {w2})"
    peds = {r["ingredient"] for r in rows if r["population"] == "pediatric"}
    for needed in ["amoxicillin", "acetaminophen", "ibuprofen", "azithromycin", "cephalexin", "prednisolone", "ondansetron"]:
        assert needed in peds, f"pediatric limit for {needed} missing"


def test_dose_limit_anchors():
    rows = {(r["ingredient"], r["route"], r["population"]): r for r in load("dose_limits.csv")
            if r["population"] == "adult" or not r["age_min_days"] or r["ingredient"] != "acetaminophen"}
    mtx = rows[("methotrexate", "oral", "adult")]
    assert mtx["frequency_rule"] == "weekly" and float(mtx["max_single_mg"]) <= 30
    apap = rows[("acetaminophen", "oral", "adult")]
    assert float(apap["max_daily_mg"]) == 4000 and float(apap["max_single_mg"]) == 1000
    assert float(rows[("ibuprofen", "oral", "pediatric")]["max_daily_mg_per_kg"]) == 40
    assert float(rows[("colchicine", "oral", "adult")]["max_daily_mg"]) <= 2.4
    alen = rows[("alendronate", "oral", "adult")]  # 70 mg weekly is fine, 70 mg daily must exceed the cap
    assert 70 <= float(alen["max_single_mg"]) and 70 > float(alen["max_daily_mg"])


def test_renal_dosing():
    rows = load("renal_dosing.csv")
    bands: dict[tuple[str, str], list[tuple[float, float, int]]] = defaultdict(list)
    for i, row in enumerate(rows, start=2):
        where = f"renal_dosing.csv:{i}"
        check_name(row["ingredient"], where)
        assert row["measure"] in {"egfr", "crcl"}, f"{where}: measure {row['measure']!r}"
        assert row["action"] in RENAL_ACTIONS, f"{where}: action {row['action']!r}"
        lo, hi = num(row["egfr_min"], where), num(row["egfr_max"], where)
        assert lo is not None and hi is not None, f"{where}: both band limits are required"
        assert lo < hi <= 1000, f"{where}: band [{lo}, {hi}) is not ordered"
        maxd = num(row["max_daily_mg"], where)
        if row["action"] == "max_daily":
            assert maxd is not None and maxd > 0, f"{where}: action max_daily needs max_daily_mg"
        if row["action"] == "contraindicated":
            assert row["severity"] == "contraindicated", f"{where}: contraindicated action with severity {row['severity']}"
        bands[(row["ingredient"], row["measure"])].append((lo, hi, i))
    for key, spans in bands.items():
        spans.sort()
        for (lo1, hi1, l1), (lo2, hi2, l2) in zip(spans, spans[1:]):
            assert hi1 <= lo2, f"{key}: overlapping bands at lines {l1} and {l2}"
    assert len({r["ingredient"] for r in rows}) >= 30
    metformin = [r for r in rows if r["ingredient"] == "metformin" and float(r["egfr_min"]) == 0]
    assert metformin and metformin[0]["action"] == "contraindicated" and float(metformin[0]["egfr_max"]) == 30


def test_hepatic_dosing():
    rows = load("hepatic_dosing.csv")
    keys = set()
    for i, row in enumerate(rows, start=2):
        where = f"hepatic_dosing.csv:{i}"
        check_name(row["ingredient"], where)
        assert row["min_grade"] in {"mild", "moderate", "severe"}, f"{where}: min_grade {row['min_grade']!r}"
        assert row["action"] in HEPATIC_ACTIONS, f"{where}: action {row['action']!r}"
        key = (row["ingredient"], row["min_grade"])
        assert key not in keys, f"{where}: duplicate {key} (one row per ingredient and grade)"
        keys.add(key)
        maxd = num(row["max_daily_mg"], where)
        if maxd is not None:
            assert maxd > 0 and row["action"] == "reduce_dose", f"{where}: a daily maximum is a reduce_dose row"
        if row["action"] == "contraindicated" or row["severity"] == "contraindicated":
            assert row["action"] == row["severity"] == "contraindicated", f"{where}: action/severity mismatch"
    by = {(r["ingredient"], r["min_grade"]): r for r in rows}
    assert len({r["ingredient"] for r in rows}) >= 15
    assert by[("ketoconazole", "mild")]["action"] == "contraindicated"
    assert by[("valproic acid", "mild")]["severity"] == "contraindicated"
    assert float(by[("ondansetron", "severe")]["max_daily_mg"]) == 8
    assert by[("rivaroxaban", "moderate")]["action"] == "avoid"


def test_pregnancy_lactation():
    rows = load("pregnancy_lactation.csv")
    keys = set()
    for i, row in enumerate(rows, start=2):
        where = f"pregnancy_lactation.csv:{i}"
        one_target(row, where)
        assert row["context"] in {"pregnancy", "breastfeeding"}, f"{where}: context {row['context']!r}"
        assert row["trimester"] in {"any", "1", "2", "3", "1|2", "2|3", "1|2|3"}, f"{where}: trimester {row['trimester']!r}"
        if row["context"] == "breastfeeding":
            assert row["trimester"] == "any", f"{where}: breastfeeding rows use trimester 'any'"
        key = (row["ingredient"], row["atc_prefix"], row["context"], row["trimester"])
        assert key not in keys, f"{where}: duplicate {key}"
        keys.add(key)
    by = {(r["ingredient"] or r["atc_prefix"], r["context"], r["trimester"]): r["severity"] for r in rows}
    assert by[("isotretinoin", "pregnancy", "any")] == "contraindicated"
    assert by[("warfarin", "pregnancy", "any")] == "contraindicated"
    assert by[("C09A", "pregnancy", "2|3")] == "contraindicated"
    assert ("codeine", "breastfeeding", "any") in by


def test_age_rules():
    rows = load("age_rules.csv")
    keys = set()
    for i, row in enumerate(rows, start=2):
        where = f"age_rules.csv:{i}"
        one_target(row, where)
        lo, hi = num(row["age_min_years"], where), num(row["age_max_years"], where)
        assert lo is not None and hi is not None and lo < hi <= 150, f"{where}: bad age band"
        key = (row["ingredient"], row["atc_prefix"], lo, hi)
        assert key not in keys, f"{where}: duplicate {key}"
        keys.add(key)
    older = [r for r in rows if float(r["age_min_years"]) == 65]
    assert len(older) >= 40 and all("Beers" in r["source_title"] for r in older)
    child = {(r["ingredient"] or r["atc_prefix"]): r for r in rows if float(r["age_min_years"]) == 0}
    assert child["codeine"]["severity"] == "contraindicated" and float(child["codeine"]["age_max_years"]) == 12
    assert float(child["aspirin"]["age_max_years"]) == 16
    assert "J01MA" in child and "doxycycline" in child and "promethazine" in child


def test_condition_contraindications():
    rows = load("condition_contraindications.csv")
    for i, row in enumerate(rows, start=2):
        where = f"condition_contraindications.csv:{i}"
        one_target(row, where)
        terms = row["condition_terms"].split("|")
        assert all(t and t == t.strip().lower() for t in terms), f"{where}: terms must be lowercase, non-empty"
        assert len(set(terms)) == len(terms), f"{where}: duplicate condition term"
        if row["icd10_prefixes"]:
            for code in row["icd10_prefixes"].split("|"):
                assert ICD10_PREFIX.match(code), f"{where}: bad ICD-10 prefix {code!r}"
    asthma = [r for r in rows if r["ingredient"] == "propranolol" and "asthma" in r["condition_terms"].split("|")]
    assert asthma and "J45" in asthma[0]["icd10_prefixes"].split("|")
    assert any(r["atc_prefix"] == "M01A" and "K25" in r["icd10_prefixes"] for r in rows)


def test_allergy_classes_and_cross_sensitivity():
    classes = load("allergy_classes.csv")
    ids, alias_owner = set(), {}
    for i, row in enumerate(classes, start=2):
        where = f"allergy_classes.csv:{i}"
        assert re.match(r"^[a-z][a-z0-9_]*$", row["class_id"]), f"{where}: class_id {row['class_id']!r}"
        assert row["class_id"] not in ids, f"{where}: duplicate class_id"
        ids.add(row["class_id"])
        atcs = [a for a in row["atc_prefixes"].split("|") if a]
        ings = [a for a in row["ingredients"].split("|") if a]
        assert atcs or ings, f"{where}: class needs ATC prefixes or ingredients"
        for a in atcs:
            assert ATC_PREFIX.match(a), f"{where}: bad ATC prefix {a!r}"
        for ing in ings:
            check_name(ing, where)
        aliases = row["aliases"].split("|")
        for alias in aliases:
            assert alias and alias == alias.strip().lower(), f"{where}: alias {alias!r} must be lowercase"
            assert alias not in alias_owner, f"{where}: alias {alias!r} also used by {alias_owner[alias]}"
            alias_owner[alias] = row["class_id"]
    for alias, cid in [("penicillin", "penicillins"), ("pcn", "penicillins"), ("sulfa", "sulfonamide_antibiotics"),
                       ("nsaids", "nsaids"), ("aspirin", "salicylates")]:
        assert alias_owner.get(alias) == cid, f"alias {alias!r} should map to {cid}"
    cross = load("cross_sensitivity.csv")
    pairs = set()
    for i, row in enumerate(cross, start=2):
        where = f"cross_sensitivity.csv:{i}"
        assert row["allergy_class"] in ids and row["cross_class"] in ids, f"{where}: unknown class"
        assert row["allergy_class"] != row["cross_class"], f"{where}: self pair"
        pair = (row["allergy_class"], row["cross_class"])
        assert pair not in pairs, f"{where}: duplicate {pair}"
        pairs.add(pair)
    assert ("penicillins", "cephalosporins") in pairs and ("penicillins", "carbapenems") in pairs


def test_interactions_curated():
    rows = load("interactions_curated.csv")
    pairs = set()
    for i, row in enumerate(rows, start=2):
        where = f"interactions_curated.csv:{i}"
        check_name(row["drug_a"], where)
        check_name(row["drug_b"], where)
        assert row["drug_a"] != row["drug_b"], f"{where}: drug interacting with itself"
        assert row["severity"] in SEVERITIES - {"info"}, f"{where}: severity {row['severity']!r}"
        assert row["management"].strip(), f"{where}: empty management"
        pair = frozenset((row["drug_a"], row["drug_b"]))
        assert pair not in pairs, f"{where}: duplicate pair {sorted(pair)} (order-insensitive)"
        pairs.add(pair)
    sev = {frozenset((r["drug_a"], r["drug_b"])): r["severity"] for r in rows}
    for a, b, s in [("sildenafil", "nitroglycerin", "contraindicated"), ("tizanidine", "ciprofloxacin", "contraindicated"),
                    ("simvastatin", "clarithromycin", "contraindicated"), ("methotrexate", "trimethoprim", "major"),
                    ("oxycodone", "alprazolam", "major"), ("clopidogrel", "omeprazole", "major")]:
        assert sev.get(frozenset((a, b))) == s, f"{a} + {b} should be {s}"


def _canonical_names() -> set[str]:
    # the KB build needs this source too: a missing or corrupt file fails here with the loader's message
    path = source_file("drug_ner_synonyms", "canonical_drugs.tsv")
    with path.open(encoding="utf-8") as fh:
        next(fh)
        return {line.split("\t", 1)[0] for line in fh}


def test_ingredient_names_are_canonical():
    names = _canonical_names()
    unknown = set()
    for table, cols in [("dose_limits.csv", ["ingredient"]), ("renal_dosing.csv", ["ingredient"]),
                        ("hepatic_dosing.csv", ["ingredient"]),
                        ("pregnancy_lactation.csv", ["ingredient"]), ("age_rules.csv", ["ingredient"]),
                        ("condition_contraindications.csv", ["ingredient"]),
                        ("interactions_curated.csv", ["drug_a", "drug_b"])]:
        for row in load(table):
            unknown |= {(table, row[c]) for c in cols if row[c] and row[c] not in names}
    for row in load("interaction_classes.csv"):
        unknown |= {("interaction_classes.csv", row["ingredient"])} if row["ingredient"] and row["ingredient"] not in names else set()
    for row in load("interaction_class_rules.csv"):
        for c in ("class_a", "class_b"):
            name = row[c].removeprefix("drug:")
            if row[c].startswith("drug:") and name not in names:
                unknown.add(("interaction_class_rules.csv", name))
    for row in load("allergy_classes.csv"):
        unknown |= {("allergy_classes.csv", x) for x in row["ingredients"].split("|") if x and x not in names}
    assert not unknown, f"names not in drug_ner_synonyms canonical list: {sorted(unknown)}"


def test_paediatric_age_bands():
    """Weight-based paediatric rows by age band, neonates and infants included (issue 17): the anchors that a
    regeneration must not drop, and the bands read the way the docs say (days, min <= age < max)."""
    rows = load("dose_limits.csv")
    ped = {(r["ingredient"], r["route"], r["age_min_days"], r["age_max_days"]): r for r in rows
           if r["population"] == "pediatric"}
    # paracetamol oral, rectal and IV: neonate, infant, child/adolescent under 50 kg
    for route in ("oral", "rectal", "iv"):
        bands = sorted((float(r["age_min_days"]), float(r["age_max_days"])) for (i, rt, _, _), r in ped.items()
                       if i == "acetaminophen" and rt == route)
        assert bands[0][0] == 0 and bands[0][1] in (28, 29), (route, bands)  # the neonatal band
        assert bands[-1][1] == 6574 and len(bands) == 3, (route, bands)
    child = ped[("acetaminophen", "oral", "730", "6574")]
    assert float(child["max_single_mg_per_kg"]) == 15 and float(child["max_daily_mg_per_kg"]) == 75
    assert float(child["max_single_mg"]) == 1000 and float(child["max_daily_mg"]) == 4000  # adult caps
    assert float(child["weight_max_kg"]) == 50
    neo_iv = ped[("acetaminophen", "iv", "0", "29")]
    assert float(neo_iv["max_single_mg_per_kg"]) == 12.5 and float(neo_iv["max_daily_mg_per_kg"]) == 50
    assert float(ped[("amoxicillin", "oral", "0", "91")]["max_daily_mg_per_kg"]) == 30  # <= 12 weeks
    # fixed doses by age band (no mg/kg): cetirizine and loratadine 2 to < 6 years, 5 mg a day
    for ing in ("cetirizine", "loratadine"):
        r = ped[(ing, "oral", "730", "2191")]
        assert float(r["max_daily_mg"]) == 5 and not r["max_daily_mg_per_kg"]
def test_interaction_class_tables():
    classes = load("interaction_classes.csv")
    for i, row in enumerate(classes, start=2):
        where = f"interaction_classes.csv:{i}"
        assert bool(row["ingredient"]) != bool(row["atc_prefix"]), f"{where}: exactly one of ingredient / atc_prefix"
        if row["atc_prefix"]:
            assert ATC_PREFIX.match(row["atc_prefix"]), f"{where}: ATC prefix {row['atc_prefix']!r}"
        else:
            check_name(row["ingredient"], where)
        assert row["licence"].strip(), f"{where}: empty licence"
    ids = {r["class_id"] for r in classes}
    rules = load("interaction_class_rules.csv")
    for i, row in enumerate(rules, start=2):
        where = f"interaction_class_rules.csv:{i}"
        assert row["severity"] in SEVERITIES - {"info"}, f"{where}: severity {row['severity']!r}"
        assert row["origin"] in {"label", "onc_high_priority", "fda_cyp_table", "fda_dsc"}, where
        assert row["management"].strip() and row["licence"].strip(), where
        for c in ("class_a", "class_b"):
            assert row[c].startswith("drug:") or row[c] in ids, f"{where}: {c} {row[c]!r} is not a class"
    by_id = {r["rule_id"]: r for r in rules}
    assert by_id["ONC-MAOI-SEROTONERGIC"]["severity"] == "contraindicated"
    assert by_id["LBL-NSAID-ANTICOAGULANT"]["severity"] == "major"
