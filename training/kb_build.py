"""Build the prescription knowledge base into ONE versioned JSON artefact.

    python -m training kb [--output PATH] [--log-mlflow] [--data-dir DIR]

Reads the public sources through ``training.sources.source_file`` (sha256-verified): drug_ner_synonyms,
fda_unii_names, who_atc_ddd, ddinter (all 8 files), pypi_seed_rules (cited rows only), plus the project's
curated tables in ``datasets/drugs/*.csv``.  A curated table that is missing is skipped with a warning;
a present one is validated and a bad row is an error naming the file and row.  The version is a content
hash (sha256 of the canonical JSON of everything but the version/build time).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import logging
import re
import sys
import time
from pathlib import Path

from prescription_check.kb import (
    CURATED_TABLES,
    KB_FORMAT,
    KBError,
    KnowledgeBase,
    hash_file,
    stale_reason,
)
from prescription_check.normalize import clean, split_combination, strip_salts
from prescription_check.schemas import SEVERITIES
from serving import registry
from serving.settings import CURATED_DRUG_TABLES_DIR, Settings, get_settings
from training.registry import experiment_id
from training.sources import source_file

log = logging.getLogger("training.kb_build")

CURATED_DIR = CURATED_DRUG_TABLES_DIR
SOURCE_COLS = ("source_title", "source_url", "source_section")

# DDInter level -> our severity.  "Unknown" = DDInter lists the interaction but grades no severity: we keep it
# as "minor" (reported, but under the default policy it neither blocks nor sends to review).  See docs.
DDINTER_LEVELS = {"Major": "major", "Moderate": "moderate", "Minor": "minor", "Unknown": "minor"}
MCP_LEVELS = {"DANGER": "major", "WARNING": "moderate", "CAUTION": "minor"}

# Recognised therapeutic duplications by ATC class (STOPP/START v3 criterion A3: "any duplicate drug class
# prescription, e.g. two concurrent NSAIDs, SSRIs, loop diuretics, ACE inhibitors, anticoagulants").
DUPLICATE_CLASSES: dict[str, dict] = {
    "nsaid": {"name": "NSAIDs", "atc": ["M01AA", "M01AB", "M01AC", "M01AE", "M01AG", "M01AH", "M01AX01"]},
    "ppi": {"name": "proton pump inhibitors", "atc": ["A02BC"]},
    "h2ra": {"name": "H2-receptor antagonists", "atc": ["A02BA"]},
    "ssri": {"name": "SSRIs", "atc": ["N06AB"]},
    "tca": {"name": "tricyclic antidepressants", "atc": ["N06AA"]},
    "ace_inhibitor": {"name": "ACE inhibitors", "atc": ["C09AA"]},
    "arb": {"name": "angiotensin II receptor blockers", "atc": ["C09CA"]},
    "statin": {"name": "statins (HMG-CoA reductase inhibitors)", "atc": ["C10AA"]},
    "benzodiazepine": {"name": "benzodiazepines", "atc": ["N05BA", "N05CD", "N03AE"]},
    "z_drug": {"name": "benzodiazepine-related hypnotics", "atc": ["N05CF"]},
    "opioid": {"name": "opioids", "atc": ["N02AA", "N02AB", "N02AC", "N02AD", "N02AE", "N02AF", "N02AG",
                                       "N02AJ", "N02AX"]},
    "beta_blocker": {"name": "beta-blockers", "atc": ["C07AA", "C07AB", "C07AG"]},
    "dhp_ccb": {"name": "dihydropyridine calcium-channel blockers", "atc": ["C08CA"]},
    "sulfonylurea": {"name": "sulfonylureas", "atc": ["A10BB"]},
    "dpp4": {"name": "DPP-4 inhibitors", "atc": ["A10BH"]},
    "loop_diuretic": {"name": "loop diuretics", "atc": ["C03CA"]},
    "thiazide": {"name": "thiazide diuretics", "atc": ["C03AA"]},
    "antipsychotic": {"name": "antipsychotics", "atc": ["N05AA", "N05AB", "N05AC", "N05AD", "N05AE", "N05AF",
                                                      "N05AG", "N05AH", "N05AL", "N05AX"]},
    "bisphosphonate": {"name": "bisphosphonates", "atc": ["M05BA"]},
    "anticoagulant": {"name": "anticoagulants", "atc": ["B01AA", "B01AB", "B01AE", "B01AF"]},
    "systemic_corticosteroid": {"name": "systemic corticosteroids", "atc": ["H02AB"]},
    "fluoroquinolone": {"name": "fluoroquinolones", "atc": ["J01MA"]},
    "macrolide": {"name": "macrolides", "atc": ["J01FA"]},
    "tetracycline": {"name": "tetracyclines", "atc": ["J01AA"]},
}
DUPLICATE_SOURCE = ("STOPP/START v3 (O'Mahony et al., Eur Geriatr Med 2023) criterion A3; classes from WHO ATC; "
                    "https://doi.org/10.1007/s41999-023-00777-y")

# --------------------------------------------------------------------------------------- curated tables
_NUM = "num"
_SEV = "sev"
_INT = "int"
HEPATIC_GRADES = ("mild", "moderate", "severe")  # patient.hepatic_impairment, least to most severe (after "none")
CURATED_SCHEMAS: dict[str, dict[str, object]] = {
    "dose_limits.csv": {
        "ingredient": "req", "route": ("oral", "iv", "im", "sc", "rectal", "inhaled", "topical", "any"),
        "population": ("adult", "pediatric"), "max_single_mg": _NUM, "max_daily_mg": _NUM,
        "max_single_mg_per_kg": _NUM, "max_daily_mg_per_kg": _NUM, "frequency_rule": "opt", "indication_note": "opt",
    },
    "renal_dosing.csv": {
        "ingredient": "req", "egfr_min": _NUM, "egfr_max": _NUM, "measure": ("egfr", "crcl"),
        "action": ("contraindicated", "avoid", "reduce_dose", "max_daily"), "max_daily_mg": _NUM, "severity": _SEV,
        "message": "req",
    },
    # Child-Pugh A/B/C = mild/moderate/severe; a row applies to its min_grade and every worse grade
    "hepatic_dosing.csv": {
        "ingredient": "req", "min_grade": HEPATIC_GRADES, "action": ("contraindicated", "avoid", "reduce_dose", "caution"),
        "max_daily_mg": _NUM, "severity": _SEV, "message": "req",
    },
    "pregnancy_lactation.csv": {
        "ingredient": "opt", "atc_prefix": "opt", "context": ("pregnancy", "breastfeeding"),
        "trimester": ("any", "1", "2", "3", "", "1|2", "2|3", "1|2|3"), "severity": _SEV, "message": "req",
    },
    "age_rules.csv": {
        "ingredient": "opt", "atc_prefix": "opt", "age_min_years": _NUM, "age_max_years": _NUM, "severity": _SEV,
        "message": "req",
    },
    "condition_contraindications.csv": {
        "ingredient": "opt", "atc_prefix": "opt", "condition_terms": "opt", "icd10_prefixes": "opt",
        "severity": _SEV, "message": "req",
    },
    "allergy_classes.csv": {
        "class_id": "req", "name": "req", "atc_prefixes": "opt", "ingredients": "opt", "aliases": "opt",
    },
    "cross_sensitivity.csv": {
        "allergy_class": "req", "cross_class": "req", "severity": _SEV, "message": "req",
    },
    "interactions_curated.csv": {
        "drug_a": "req", "drug_b": "req", "severity": ("contraindicated", "major", "moderate", "minor"),
        "message": "req", "management": "opt",
    },
}


if set(CURATED_SCHEMAS) != set(CURATED_TABLES):  # the reader and the builder must agree on the tables
    raise RuntimeError(f"CURATED_SCHEMAS {sorted(CURATED_SCHEMAS)} differ from prescription_check.kb.CURATED_TABLES")


class KBBuildError(ValueError):
    """A curated table is malformed (the message names file and row)."""


def _num(value: str, where: str, column: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise KBBuildError(f"{where}: column {column!r} must be a number, got {value!r}") from None


def read_curated(name: str, directory: Path = CURATED_DIR) -> list[dict] | None:
    """Validated rows of one curated table (numbers parsed, '|' lists split), or None if absent."""
    path = directory / name
    schema = CURATED_SCHEMAS[name]
    if not path.exists():
        log.warning("curated table %s is missing: skipped", path)
        return None
    rows: list[dict] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in (*schema, *SOURCE_COLS) if c not in header]
        if missing:
            raise KBBuildError(f"{path.name}: missing column(s) {missing}; header is {header}")
        for lineno, raw in enumerate(reader, start=2):
            where = f"{path.name} row {lineno}"
            if raw is None or all(not (v or "").strip() for v in raw.values() if isinstance(v, str)):
                continue
            if None in raw:
                raise KBBuildError(f"{where}: more cells than columns")
            row = {k: (v or "").strip() for k, v in raw.items()}
            for col, rule in schema.items():
                val = row[col]
                if rule == "req" and not val:
                    raise KBBuildError(f"{where}: column {col!r} is empty")
                elif rule == _NUM:
                    row[col] = _num(val, where, col)
                elif rule == _SEV and val not in SEVERITIES:
                    raise KBBuildError(f"{where}: severity {val!r} is not one of {SEVERITIES}")
                elif isinstance(rule, tuple) and val.lower() not in rule:
                    if not (val == "" and "" in rule):
                        raise KBBuildError(f"{where}: column {col!r} value {val!r} not in {rule}")
                elif isinstance(rule, tuple):
                    row[col] = val.lower()
            for col in SOURCE_COLS[:2]:
                if not row[col]:
                    raise KBBuildError(f"{where}: column {col!r} is empty: every curated row must cite its source")
            if "ingredient" in schema and "atc_prefix" in schema and not (row["ingredient"] or row["atc_prefix"]):
                raise KBBuildError(f"{where}: one of 'ingredient' or 'atc_prefix' must be filled")
            if name == "condition_contraindications.csv" and not (row["condition_terms"] or row["icd10_prefixes"]):
                raise KBBuildError(f"{where}: one of 'condition_terms' or 'icd10_prefixes' must be filled")
            # a dose_limits row with no limit at all documents "no labelled maximum" (e.g. warfarin): kept, unused
            if name == "hepatic_dosing.csv" and row["action"] == "contraindicated" and row["severity"] != "contraindicated":
                raise KBBuildError(f"{where}: action 'contraindicated' needs severity 'contraindicated', "
                                   f"got {row['severity']!r}")
            if name == "age_rules.csv" and row["age_min_years"] is None and row["age_max_years"] is None:
                raise KBBuildError(f"{where}: age_min_years or age_max_years must be given")
            row["_row"] = f"{path.name}#{lineno}"
            row["source"] = "; ".join(x for x in (row["source_title"], row["source_section"], row["source_url"]) if x)
            rows.append(row)
    return rows


_hash_file = hash_file


# --------------------------------------------------------------------------------------------- names
_ROUTE_PAREN = re.compile(r"\s*\((topical|ophthalmic|nasal|otic|inhalation|vaginal|rectal|oral inhalation)\)\s*$")
_ANY_PAREN = re.compile(r"\s*\([^)]*\)\s*$")


def _read_tsv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


class _NameBuilder:
    def __init__(self):
        self.variant: dict[str, str] = {}     # variant -> canonical string (drug_ner)
        self.canon_self: set[str] = set()     # canonicals (single ingredient names)
        self.single_names: set[str] = set()   # ATC L5 / DDInter single-ingredient names (trusted)
        self.names: dict[str, list[str]] = {}
        self.brand_parts: dict[str, list[str]] = {}

    def base(self, name: str, depth: int = 0) -> str:
        """Canonical single-ingredient name of a (single) name."""
        key = clean(name)
        key = _ANY_PAREN.sub("", key) if not _ROUTE_PAREN.search(key) else key
        for cand in dict.fromkeys((strip_salts(key), key)):
            target = self.variant.get(cand)
            if target and depth < 3:
                if len(split_combination(target)) > 1 or target.startswith(("receptors", "anti-")):
                    # a single name must not become a combination or a class (source noise)
                    return strip_salts(cand)
                return strip_salts(target)
        return strip_salts(key)

    def ingredients(self, name: str) -> list[str]:
        key = clean(name)
        target = self.variant.get(key) or self.variant.get(strip_salts(key)) or key
        if key in self.single_names and len(split_combination(target)) > 1:
            target = key
        parts = split_combination(target)
        out: list[str] = []
        for p in parts:
            b = self.base(p)
            if b and b not in out:
                out.append(b)
        return out


def build_kb(settings: Settings | None = None, curated_dir: Path = CURATED_DIR) -> dict:
    settings = settings or get_settings()
    t0 = time.perf_counter()
    src = lambda s, f: source_file(s, f, settings=settings)  # noqa: E731
    files: dict[str, str] = {}
    nb = _NameBuilder()
    # curated tables first: a bad row fails the build at once, naming file and row
    curated: dict[str, list[dict] | None] = {}
    for name in CURATED_SCHEMAS:
        curated[name] = read_curated(name, curated_dir)
        if curated[name] is not None:
            files[f"project/{name}"] = _hash_file(curated_dir / name)

    # 1. drug_ner synonyms
    p = src("drug_ner_synonyms", "variant_to_canonical.tsv")
    files["drug_ner_synonyms/variant_to_canonical.tsv"] = _hash_file(p)
    brand_flags: set[str] = set()
    for r in _read_tsv(p):
        v, c = clean(r["variant"]), clean(r["canonical"])
        if not v or not c:
            continue
        nb.variant.setdefault(v, c)
        if v == c:
            nb.canon_self.add(c)
        if (r.get("is_brand") or "").strip() in {"True", ""} and v != c:
            brand_flags.add(v)

    # 2. WHO ATC (L5 names -> codes) + L4 names
    p = src("who_atc_ddd", "WHO_ATC-DDD_2026-04-25.csv")
    files["who_atc_ddd/WHO_ATC-DDD_2026-04-25.csv"] = _hash_file(p)
    atc_rows = list(csv.DictReader(p.open(newline="", encoding="utf-8")))
    atc_names: dict[str, str] = {}
    l5: list[tuple[str, str]] = []
    for r in atc_rows:
        code, name = r["atc_code"].strip(), clean(r["atc_name"])
        if len(code) in (1, 3, 4, 5) and code not in atc_names:
            atc_names[code] = r["atc_name"].strip()
        elif len(code) == 7:
            if code not in atc_names:
                atc_names[code] = r["atc_name"].strip()
                l5.append((code, name))
    for _, name in l5:
        if len(split_combination(name)) == 1 and "combination" not in name:
            nb.single_names.add(name)

    # 3. DDInter names
    dd_rows: list[tuple[str, str, str]] = []
    for letter in "ABDHLPRV":
        fname = f"ddinter_downloads_code_{letter}.csv"
        p = src("ddinter", fname)
        files[f"ddinter/{fname}"] = _hash_file(p)
        with p.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                dd_rows.append((r["Drug_A"], r["Drug_B"], r["Level"]))
    dd_names = {n for a, b, _ in dd_rows for n in (a, b)}
    for n in dd_names:
        k = clean(n)
        if not _ROUTE_PAREN.search(k):
            nb.single_names.add(_ANY_PAREN.sub("", k))

    names: dict[str, list[str]] = {}

    def add(alias: str, ingredients: list[str], override: bool = False) -> None:
        alias = clean(alias)
        if alias and ingredients and (override or alias not in names):
            names[alias] = ingredients

    # canonical singles and their variants
    for v in nb.variant:
        s = strip_salts(v)
        ings = nb.ingredients(s) if s != v and s in nb.variant else nb.ingredients(v)
        add(v, ings)
    for n in nb.single_names:
        add(n, [nb.base(n)])
    # ATC codes per ingredient
    atc: dict[str, list[str]] = {}
    for code, name in l5:
        parts = split_combination(name)
        if len(parts) > 1 or "combination" in name:
            continue
        ing = nb.base(name)
        add(name, [ing])
        atc.setdefault(ing, [])
        if code not in atc[ing]:
            atc[ing].append(code)

    # 4. FDA UNII brand/official names: brand -> ingredient (salt stripped); "X COMPONENT Y" -> combination
    p = src("fda_unii_names", "UNII_Names_brand_official.tsv")
    files["fda_unii_names/UNII_Names_brand_official.tsv"] = _hash_file(p)
    components: dict[str, list[str]] = {}
    for r in _read_tsv(p):
        name, disp = clean(r["Name"]), clean(r["Display Name"])
        if not name or not disp:
            continue
        ing = nb.base(disp)
        if " component " in name:
            brand = name.split(" component ")[0].strip()
            components.setdefault(brand, [])
            if ing not in components[brand]:
                components[brand].append(ing)
            continue
        if r["TYPE"] == "of":
            add(name, [ing])
        elif r["TYPE"] == "bn":
            add(name, [ing])
    for brand, ings in components.items():
        if len(ings) > 1:
            add(brand, ings, override=True)
        else:
            add(brand, ings)

    # 5. project abbreviations (override): alias -> ingredients (+ strengths per unit)
    strengths: dict[str, dict] = {}
    abbr = curated_dir / "abbreviations.csv"
    if abbr.exists():
        files["project/abbreviations.csv"] = _hash_file(abbr)
        with abbr.open(newline="", encoding="utf-8") as fh:
            for lineno, r in enumerate(csv.DictReader(fh), start=2):
                alias = clean(r["alias"])
                ings = [nb.base(x) for x in r["ingredients"].split("|") if x.strip()]
                if not alias or not ings:
                    raise KBBuildError(f"abbreviations.csv row {lineno}: alias and ingredients are required")
                add(alias, ings, override=True)
                info: dict = {}
                if (r.get("strengths_mg") or "").strip():
                    vals = [float(x) for x in r["strengths_mg"].split("|")]
                    if len(vals) != len(ings):
                        raise KBBuildError(f"abbreviations.csv row {lineno}: {len(vals)} strengths for "
                                           f"{len(ings)} ingredients")
                    info["mg"] = dict(zip(ings, vals))
                if (r.get("mg_per_ml") or "").strip():
                    info["mg_per_ml"] = float(r["mg_per_ml"])
                if info:
                    strengths[alias] = info

    # ATC codes for ingredients that only resolve through a synonym (e.g. paracetamol -> acetaminophen)
    for code, name in l5:
        if len(split_combination(name)) == 1 and "combination" not in name:
            for ing in names.get(name, []):
                atc.setdefault(ing, [])
                if code not in atc[ing]:
                    atc[ing].append(code)
    # an ingredient that appears in ATC only inside a combination ("imipenem and cilastatin", J01DH51) takes
    # the combination's code when it is the first component: the level-4 class follows the main ingredient
    for code, name in l5:
        parts = split_combination(name)
        if len(parts) > 1 and "combination" not in name:
            first = names.get(clean(parts[0])) or [nb.base(parts[0])]
            if len(first) == 1 and not atc.get(first[0]):
                atc[first[0]] = [code]

    def canon(name: str) -> list[str]:
        key = clean(name)
        if key in names:
            return names[key]
        s = strip_salts(key)
        return names.get(s) or [nb.base(key)]

    # 6. interactions: DDInter (all 8 files), cited seed rows, curated overrides
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    ddinter: dict[str, str] = {}
    for a, b, level in dd_rows:
        ka, kb_ = clean(a), clean(b)
        if _ROUTE_PAREN.search(ka) or _ROUTE_PAREN.search(kb_):
            continue  # topical/ophthalmic/nasal forms: not merged into the systemic ingredient
        for ia in canon(a):
            for ib in canon(b):
                if ia == ib:
                    continue
                key = "|".join(sorted((ia, ib)))
                sev = DDINTER_LEVELS.get(level, "minor")
                old = ddinter.get(key)
                if old is None or rank[sev] < rank[_lvl(old)]:
                    ddinter[key] = level if level in DDINTER_LEVELS else "Unknown"
    interactions: dict[str, dict] = {}
    p = src("pypi_seed_rules", "drug_interaction_mcp_interactions.csv")
    files["pypi_seed_rules/drug_interaction_mcp_interactions.csv"] = _hash_file(p)
    with p.open(newline="", encoding="utf-8") as fh:
        for lineno, r in enumerate(csv.DictReader(fh), start=2):
            source = (r.get("source") or "").strip()
            if not source or r["severity"] not in MCP_LEVELS:
                continue  # uncited rows are left out
            ia = canon(r["drug_a"].split("|")[0])
            ib = canon(r["drug_b"].split("|")[0])
            for x in ia:
                for y in ib:
                    if x == y:
                        continue
                    key = "|".join(sorted((x, y)))
                    sev = MCP_LEVELS[r["severity"]]
                    old = interactions.get(key)
                    if old and rank[old["severity"]] <= rank[sev]:
                        continue
                    interactions[key] = {
                        "severity": sev, "message": r["description"].strip(), "management": r["recommendation"].strip(),
                        "source": f"{source} (via drug-interaction-mcp 0.1.0, MIT)", "origin": "seed",
                        "row": f"drug_interaction_mcp_interactions.csv#{lineno}",
                    }

    unresolved: list[str] = []

    def canon_curated(name: str, where: str) -> str:
        key = clean(name)
        ings = names.get(key) or names.get(strip_salts(key))
        if not ings:
            unresolved.append(f"{where}: {name!r}")
            return strip_salts(key)
        return ings[0] if len(ings) == 1 else key

    for r in curated.get("interactions_curated.csv") or []:
        a, b = canon_curated(r["drug_a"], r["_row"]), canon_curated(r["drug_b"], r["_row"])
        key = "|".join(sorted((a, b)))
        interactions[key] = {"severity": r["severity"], "message": r["message"], "management": r["management"],
                             "source": r["source"], "origin": "curated", "row": r["_row"]}
    tables: dict[str, list[dict]] = {}
    for name, rows in curated.items():
        if rows is None or name == "interactions_curated.csv":
            continue
        for r in rows:
            if r.get("ingredient"):
                r["ingredient"] = canon_curated(r["ingredient"], r["_row"])
            if name == "allergy_classes.csv":
                r["ingredients"] = [canon_curated(x, r["_row"]) for x in r["ingredients"].split("|") if x.strip()]
                r["atc_prefixes"] = [x.strip().upper() for x in r["atc_prefixes"].split("|") if x.strip()]
                r["aliases"] = [clean(x) for x in r["aliases"].split("|") if x.strip()]
            if name == "condition_contraindications.csv":
                r["condition_terms"] = [clean(x) for x in r["condition_terms"].split("|") if x.strip()]
                r["icd10_prefixes"] = [x.strip().upper().replace(".", "") for x in r["icd10_prefixes"].split("|")
                                       if x.strip()]
            if r.get("atc_prefix"):
                r["atc_prefix"] = r["atc_prefix"].upper()
        tables[name.removesuffix(".csv")] = rows
    for u in unresolved:
        log.warning("curated ingredient not in the name index (kept as written): %s", u)

    # names used by the fuzzy matcher: real drug names (ATC/DDInter/curated ingredients and brands)
    known_ings = set(atc) | {i for k in ddinter for i in k.split("|")}
    fuzzy_vocab = sorted({n for n, ings in names.items()
                          if 5 <= len(n) <= 30 and n.replace("-", "").replace(" ", "").isalpha()
                          and (all(i in known_ings for i in ings)) and (n in known_ings or n in brand_flags
                                                                        or n in nb.single_names or n in strengths)})

    kb = {
        "format": KB_FORMAT,
        "sources": files,
        "names": names,
        "strengths": strengths,
        "fuzzy_vocabulary": fuzzy_vocab,
        "atc": atc,
        "atc_names": {c: n for c, n in atc_names.items() if len(c) <= 5},
        "ddinter": ddinter,
        "ddinter_levels": DDINTER_LEVELS,
        "interactions": interactions,
        "duplicate_classes": DUPLICATE_CLASSES,
        "duplicate_source": DUPLICATE_SOURCE,
        "tables": tables,
        "missing_tables": [n for n, rows in curated.items() if rows is None],
        "unresolved_curated": unresolved,
    }
    kb["version"] = content_version(kb)
    kb["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kb["build_seconds"] = round(time.perf_counter() - t0, 2)
    return kb


def _lvl(level: str) -> str:
    return DDINTER_LEVELS.get(level, "minor")


def content_version(kb: dict) -> str:
    body = {k: v for k, v in kb.items() if k not in {"version", "built_at", "build_seconds"}}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"kb-{digest[:16]}"


def ensure_kb(settings: Settings, curated_dir: Path = CURATED_DIR) -> str:
    """Build the artefact at ``settings.resolved_kb_path()`` when it is missing, unreadable, of another format or
    built from other curated tables than ``curated_dir``'s (the service refuses such an artefact); says what
    it did."""
    path = settings.resolved_kb_path()
    reason = "missing"
    if path.exists():
        try:
            current = KnowledgeBase.load(path)
            reason = stale_reason(current.raw.get("sources", {}), curated_dir)
        except KBError as exc:
            reason = str(exc)
        if reason is None:
            return f"KB {current.version} at {path} is current"
    kb = build_kb(settings, curated_dir=curated_dir)
    write_kb(kb, path)
    return f"KB {kb['version']} built at {path} ({reason})"


def write_kb(kb: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(kb, separators=(",", ":"), ensure_ascii=False).encode()
    tmp = path.with_suffix(path.suffix + ".tmp")
    if path.suffix == ".gz":
        tmp.write_bytes(gzip.compress(data, compresslevel=6))
    else:
        tmp.write_bytes(data)
    tmp.replace(path)
    return path


def log_to_mlflow(path: Path, kb: dict, settings: Settings) -> str:
    import mlflow

    registry.configure(settings)
    exp = experiment_id("knowledge-base", settings)
    with mlflow.start_run(experiment_id=exp, run_name=kb["version"]) as run:
        mlflow.set_tags({"kb_version": kb["version"], "kb_format": str(kb["format"])})
        mlflow.log_params({"names": len(kb["names"]), "ddinter_pairs": len(kb["ddinter"]),
                           "curated_interactions": len(kb["interactions"]),
                           "missing_tables": ",".join(kb["missing_tables"]) or "none"})
        mlflow.log_metrics({f"rows_{k}": len(v) for k, v in kb["tables"].items()})
        mlflow.log_artifact(str(path), artifact_path="kb")
        return run.info.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training kb", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="artefact path (default: settings.resolved_kb_path())")
    parser.add_argument("--log-mlflow", action="store_true", help="log the artefact to experiment 'knowledge-base'")
    parser.add_argument("--curated-dir", type=Path, default=CURATED_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = get_settings()
    try:
        kb = build_kb(settings, curated_dir=args.curated_dir)
    except KBBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = write_kb(kb, args.output or settings.resolved_kb_path())
    print(f"KB {kb['version']} written to {out} ({out.stat().st_size / 1e6:.1f} MB, {kb['build_seconds']} s): "
          f"{len(kb['names'])} names, {len(kb['atc'])} ingredients with ATC, {len(kb['ddinter'])} DDInter pairs, "
          f"{len(kb['interactions'])} cited/curated interactions, tables: "
          + ", ".join(f"{k}={len(v)}" for k, v in kb["tables"].items())
          + (f"; missing: {', '.join(kb['missing_tables'])}" if kb["missing_tables"] else ""))
    if args.log_mlflow:
        run_id = log_to_mlflow(out, kb, settings)
        print(f"logged to MLflow experiment 'knowledge-base', run {run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
