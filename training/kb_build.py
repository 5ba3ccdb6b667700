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
from dataclasses import dataclass, field
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
# where a class rule comes from: an FDA label statement, the ONC high-priority list (Phansalkar 2012), the FDA table of
# CYP substrates/inhibitors/inducers, an FDA Drug Safety Communication
CLASS_RULE_ORIGINS = ("label", "onc_high_priority", "fda_cyp_table", "fda_dsc")
CURATED_SCHEMAS: dict[str, dict[str, object]] = {
    "dose_limits.csv": {
        "ingredient": "req", "route": ("oral", "iv", "im", "sc", "rectal", "inhaled", "topical", "any"),
        "population": ("adult", "pediatric"), "max_single_mg": _NUM, "max_daily_mg": _NUM,
        "max_single_mg_per_kg": _NUM, "max_daily_mg_per_kg": _NUM, "frequency_rule": "opt", "indication_note": "opt",
        # paediatric age band (days, min <= age < max) and weight ceiling (the row applies below it); optional
        # columns, so a table written before they existed still reads (empty = every child)
        "age_min_days": _NUM, "age_max_days": _NUM, "weight_max_kg": _NUM,
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
    # class membership for class-level interaction rules: one member (ingredient or ATC prefix) per row, each cited
    "interaction_classes.csv": {
        "class_id": "req", "class_name": "req", "ingredient": "opt", "atc_prefix": "opt", "licence": "req",
    },
    # class x class (or "drug:<ingredient>") interaction rules, expanded into ingredient pairs at build time
    "interaction_class_rules.csv": {
        "rule_id": "req", "class_a": "req", "class_b": "req",
        "severity": ("contraindicated", "major", "moderate", "minor"), "message": "req", "management": "req",
        "licence": "req", "origin": CLASS_RULE_ORIGINS,
    },
}


# columns a table may lack (added later): read as empty, so older tables stay valid
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"dose_limits.csv": ("age_min_days", "age_max_days", "weight_max_kg")}


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
        optional = OPTIONAL_COLUMNS.get(name, ())
        missing = [c for c in (*schema, *SOURCE_COLS) if c not in header and c not in optional]
        if missing:
            raise KBBuildError(f"{path.name}: missing column(s) {missing}; header is {header}")
        for lineno, raw in enumerate(reader, start=2):
            where = f"{path.name} row {lineno}"
            if raw is None or all(not (v or "").strip() for v in raw.values() if isinstance(v, str)):
                continue
            if None in raw:
                raise KBBuildError(f"{where}: more cells than columns")
            row = {k: (v or "").strip() for k, v in raw.items()}
            for col in optional:
                row.setdefault(col, "")
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
            if name == "dose_limits.csv":
                _check_dose_band(row, where)
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


def _check_dose_band(row: dict, where: str) -> None:
    """A dose-limit row's age band and weight ceiling: paediatric rows only, non-negative, min below max."""
    lo, hi, wmax = row["age_min_days"], row["age_max_days"], row["weight_max_kg"]
    if row["population"] != "pediatric" and any(v is not None for v in (lo, hi, wmax)):
        raise KBBuildError(f"{where}: age_min_days/age_max_days/weight_max_kg apply to pediatric rows only")
    for col, v in (("age_min_days", lo), ("age_max_days", hi), ("weight_max_kg", wmax)):
        if v is not None and v < 0:
            raise KBBuildError(f"{where}: column {col!r} must not be negative, got {v:g}")
    if lo is not None and hi is not None and lo >= hi:
        raise KBBuildError(f"{where}: age_min_days {lo:g} must be below age_max_days {hi:g}")
    if wmax is not None and wmax == 0:
        raise KBBuildError(f"{where}: weight_max_kg 0 is meaningless; leave it empty")


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


# ------------------------------------------------------------------------------------------ the build
@dataclass
class KBBuild:
    """What the steps of one KB build share (see ``build_kb``)."""

    settings: Settings
    curated_dir: Path
    files: dict[str, str] = field(default_factory=dict)  # source file -> sha256 (the artefact's "sources")
    nb: _NameBuilder = field(default_factory=_NameBuilder)
    curated: dict[str, list[dict] | None] = field(default_factory=dict)  # table -> validated rows (None: missing)
    brand_flags: set[str] = field(default_factory=set)  # drug_ner variants flagged as brands
    atc_names: dict[str, str] = field(default_factory=dict)  # ATC code -> name (levels 1-5)
    l5: list[tuple[str, str]] = field(default_factory=list)  # (ATC level-5 code, cleaned name), first per code
    dd_rows: list[tuple[str, str, str]] = field(default_factory=list)  # DDInter (Drug_A, Drug_B, Level)
    names: dict[str, list[str]] = field(default_factory=dict)  # alias -> ingredients
    atc: dict[str, list[str]] = field(default_factory=dict)  # ingredient -> ATC codes
    strengths: dict[str, dict] = field(default_factory=dict)  # abbreviation -> strengths per unit
    ddinter: dict[str, str] = field(default_factory=dict)  # "a|b" -> most severe DDInter level
    interactions: dict[str, dict] = field(default_factory=dict)  # "a|b" -> cited seed / class rule / curated
    class_rules: dict[str, dict] = field(default_factory=dict)  # class rule id -> message, source, classes
    class_members: dict[str, dict] = field(default_factory=dict)  # membership row -> class and its source
    tables: dict[str, list[dict]] = field(default_factory=dict)  # curated tables (but interactions), canonicalised
    unresolved: list[str] = field(default_factory=list)  # curated names not in the name index

    def source(self, source: str, name: str) -> Path:
        """A public source file (sha256-verified), its hash recorded in ``files``."""
        path = source_file(source, name, settings=self.settings)
        self.files[f"{source}/{name}"] = _hash_file(path)
        return path

    def add(self, alias: str, ingredients: list[str], override: bool = False) -> None:
        """Index ``alias`` (cleaned) -> ``ingredients``; the first entry of an alias wins unless ``override``."""
        alias = clean(alias)
        if alias and ingredients and (override or alias not in self.names):
            self.names[alias] = ingredients

    def canon(self, name: str) -> list[str]:
        """Ingredients of a source name: the name index, then without salts, then the name builder."""
        key = clean(name)
        if key in self.names:
            return self.names[key]
        s = strip_salts(key)
        return self.names.get(s) or [self.nb.base(key)]

    def canon_curated(self, name: str, where: str) -> str:
        """Canonical ingredient of a curated name; one not in the index is kept as written and noted."""
        key = clean(name)
        ings = self.names.get(key) or self.names.get(strip_salts(key))
        if not ings:
            self.unresolved.append(f"{where}: {name!r}")
            return strip_salts(key)
        return ings[0] if len(ings) == 1 else key


def read_curated_tables(b: KBBuild) -> None:
    """Every curated table, validated first: a bad row fails the build at once, naming file and row."""
    for name in CURATED_SCHEMAS:
        b.curated[name] = read_curated(name, b.curated_dir)
        if b.curated[name] is not None:
            b.files[f"project/{name}"] = _hash_file(b.curated_dir / name)


def read_synonyms(b: KBBuild) -> None:
    """drug_ner synonyms: variant -> canonical, the canonical single-ingredient names and the brand variants."""
    for r in _read_tsv(b.source("drug_ner_synonyms", "variant_to_canonical.tsv")):
        v, c = clean(r["variant"]), clean(r["canonical"])
        if not v or not c:
            continue
        b.nb.variant.setdefault(v, c)
        if v == c:
            b.nb.canon_self.add(c)
        if (r.get("is_brand") or "").strip() in {"True", ""} and v != c:
            b.brand_flags.add(v)


def read_atc(b: KBBuild) -> None:
    """WHO ATC: code names of levels 1-5, the level-5 (ingredient) names, the single-ingredient ones trusted."""
    p = b.source("who_atc_ddd", "WHO_ATC-DDD_2026-04-25.csv")
    atc_rows = list(csv.DictReader(p.open(newline="", encoding="utf-8")))
    for r in atc_rows:
        code, name = r["atc_code"].strip(), clean(r["atc_name"])
        if len(code) in (1, 3, 4, 5) and code not in b.atc_names:
            b.atc_names[code] = r["atc_name"].strip()
        elif len(code) == 7:
            if code not in b.atc_names:
                b.atc_names[code] = r["atc_name"].strip()
                b.l5.append((code, name))
    for _, name in b.l5:
        if len(split_combination(name)) == 1 and "combination" not in name:
            b.nb.single_names.add(name)


def read_ddinter(b: KBBuild) -> None:
    """DDInter, all 8 files: the graded pairs, and their drug names as trusted single names (systemic forms)."""
    for letter in "ABDHLPRV":
        p = b.source("ddinter", f"ddinter_downloads_code_{letter}.csv")
        with p.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                b.dd_rows.append((r["Drug_A"], r["Drug_B"], r["Level"]))
    dd_names = {n for a, b_, _ in b.dd_rows for n in (a, b_)}
    for n in dd_names:
        k = clean(n)
        if not _ROUTE_PAREN.search(k):
            b.nb.single_names.add(_ANY_PAREN.sub("", k))


def index_names(b: KBBuild) -> None:
    """The name index from the sources read so far: drug_ner variants, trusted single names, ATC level-5 names;
    the ATC codes of each single ingredient."""
    nb = b.nb
    for v in nb.variant:
        s = strip_salts(v)
        ings = nb.ingredients(s) if s != v and s in nb.variant else nb.ingredients(v)
        b.add(v, ings)
    for n in nb.single_names:
        b.add(n, [nb.base(n)])
    for code, name in b.l5:
        parts = split_combination(name)
        if len(parts) > 1 or "combination" in name:
            continue
        ing = nb.base(name)
        b.add(name, [ing])
        b.atc.setdefault(ing, [])
        if code not in b.atc[ing]:
            b.atc[ing].append(code)


def add_fda_names(b: KBBuild) -> None:
    """FDA UNII brand/official names: brand -> ingredient (salt stripped); "X COMPONENT Y" rows make X a
    combination of its components."""
    components: dict[str, list[str]] = {}
    for r in _read_tsv(b.source("fda_unii_names", "UNII_Names_brand_official.tsv")):
        name, disp = clean(r["Name"]), clean(r["Display Name"])
        if not name or not disp:
            continue
        ing = b.nb.base(disp)
        if " component " in name:
            brand = name.split(" component ")[0].strip()
            components.setdefault(brand, [])
            if ing not in components[brand]:
                components[brand].append(ing)
            continue
        if r["TYPE"] == "of":
            b.add(name, [ing])
        elif r["TYPE"] == "bn":
            b.add(name, [ing])
    for brand, ings in components.items():
        if len(ings) > 1:
            b.add(brand, ings, override=True)
        else:
            b.add(brand, ings)


def add_abbreviations(b: KBBuild) -> None:
    """The project's abbreviations (``abbreviations.csv``, when present) override the index: alias -> ingredients,
    plus the strengths per unit of fixed-dose products."""
    abbr = b.curated_dir / "abbreviations.csv"
    if not abbr.exists():
        return
    b.files["project/abbreviations.csv"] = _hash_file(abbr)
    with abbr.open(newline="", encoding="utf-8") as fh:
        for lineno, r in enumerate(csv.DictReader(fh), start=2):
            alias = clean(r["alias"])
            ings = [b.nb.base(x) for x in r["ingredients"].split("|") if x.strip()]
            if not alias or not ings:
                raise KBBuildError(f"abbreviations.csv row {lineno}: alias and ingredients are required")
            b.add(alias, ings, override=True)
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
                b.strengths[alias] = info


def link_atc_codes(b: KBBuild) -> None:
    """ATC codes for ingredients the level-5 names reach only through the index: a synonym (paracetamol ->
    acetaminophen), or a combination whose first component it is ("imipenem and cilastatin", J01DH51: the
    level-4 class follows the main ingredient)."""
    for code, name in b.l5:
        if len(split_combination(name)) == 1 and "combination" not in name:
            for ing in b.names.get(name, []):
                b.atc.setdefault(ing, [])
                if code not in b.atc[ing]:
                    b.atc[ing].append(code)
    for code, name in b.l5:
        parts = split_combination(name)
        if len(parts) > 1 and "combination" not in name:
            first = b.names.get(clean(parts[0])) or [b.nb.base(parts[0])]
            if len(first) == 1 and not b.atc.get(first[0]):
                b.atc[first[0]] = [code]


def grade_ddinter_pairs(b: KBBuild) -> None:
    """DDInter pairs by canonical ingredients, each with its most severe level (topical/ophthalmic/nasal forms
    are not merged into the systemic ingredient)."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    for a, b_, level in b.dd_rows:
        ka, kb_ = clean(a), clean(b_)
        if _ROUTE_PAREN.search(ka) or _ROUTE_PAREN.search(kb_):
            continue
        for ia in b.canon(a):
            for ib in b.canon(b_):
                if ia == ib:
                    continue
                key = "|".join(sorted((ia, ib)))
                sev = DDINTER_LEVELS.get(level, "minor")
                old = b.ddinter.get(key)
                if old is None or rank[sev] < rank[_lvl(old)]:
                    b.ddinter[key] = level if level in DDINTER_LEVELS else "Unknown"


def add_seed_interactions(b: KBBuild) -> None:
    """The drug-interaction-mcp seed rules that cite a source (uncited rows are left out), most severe per pair."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    p = b.source("pypi_seed_rules", "drug_interaction_mcp_interactions.csv")
    with p.open(newline="", encoding="utf-8") as fh:
        for lineno, r in enumerate(csv.DictReader(fh), start=2):
            source = (r.get("source") or "").strip()
            if not source or r["severity"] not in MCP_LEVELS:
                continue
            ia = b.canon(r["drug_a"].split("|")[0])
            ib = b.canon(r["drug_b"].split("|")[0])
            for x in ia:
                for y in ib:
                    if x == y:
                        continue
                    key = "|".join(sorted((x, y)))
                    sev = MCP_LEVELS[r["severity"]]
                    old = b.interactions.get(key)
                    if old and rank[old["severity"]] <= rank[sev]:
                        continue
                    b.interactions[key] = {
                        "severity": sev, "message": r["description"].strip(), "management": r["recommendation"].strip(),
                        "source": f"{source} (via drug-interaction-mcp 0.1.0, MIT)", "origin": "seed",
                        "row": f"drug_interaction_mcp_interactions.csv#{lineno}",
                    }


def add_curated_interactions(b: KBBuild) -> None:
    """``interactions_curated.csv`` rows override the seed rules for their pair."""
    for r in b.curated.get("interactions_curated.csv") or []:
        x, y = b.canon_curated(r["drug_a"], r["_row"]), b.canon_curated(r["drug_b"], r["_row"])
        key = "|".join(sorted((x, y)))
        b.interactions[key] = {"severity": r["severity"], "message": r["message"], "management": r["management"],
                               "source": r["source"], "origin": "curated", "row": r["_row"]}


def _class_members(b: KBBuild) -> dict[str, dict[str, str]]:
    """class id -> {ingredient: the membership row that put it there} (listed ingredients, and every indexed
    ingredient with a single-substance ATC code under a listed prefix); the first row wins.  Level-5 codes 50-99
    are combinations in the WHO scheme (e.g. M01AE52 naproxen and esomeprazole): an ingredient that holds only such
    a code is not a member (esomeprazole is not an NSAID)."""
    out: dict[str, dict[str, str]] = {}
    l5_name = dict(reversed(b.l5))  # code -> cleaned WHO name (first per code)

    def own_codes(ing: str, codes: list[str]) -> list[str]:
        # an ingredient with a WHO code of its own name keeps only those: a synonym-table slip (drug_ner maps
        # "clofezone", M01AA05, to rabeprazole) must not make rabeprazole an NSAID; synonyms (paracetamol ->
        # acetaminophen) still count for ingredients WHO lists under another name
        exact = [c for c in codes if l5_name.get(c) == ing]
        return exact or codes

    for r in b.curated.get("interaction_classes.csv") or []:
        members = out.setdefault(r["class_id"], {})
        if r["ingredient"]:
            members.setdefault(b.canon_curated(r["ingredient"], r["_row"]), r["_row"])
        else:
            prefix = r["atc_prefix"].upper()
            for ing, codes in b.atc.items():
                if any(c.startswith(prefix) and (len(c) < 7 or not c[5:7].isdigit() or int(c[5:7]) < 50)
                       for c in own_codes(ing, codes)):
                    members.setdefault(ing, r["_row"])
    return out


def add_class_interactions(b: KBBuild) -> None:
    """``interaction_class_rules.csv`` expanded into ingredient pairs through ``interaction_classes.csv``
    (``drug:<name>`` is a class of one).  Per pair the most severe rule wins; a pair already held by a cited seed
    row keeps the more severe of the two; when DDInter grades the pair more severely, the entry takes DDInter's
    severity and says so (``ddinter_level``).  Curated rows (added after) override all of this."""
    rules = b.curated.get("interaction_class_rules.csv")
    if not rules:
        return
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    members = _class_members(b)
    classes = {r["class_id"]: r["class_name"] for r in b.curated.get("interaction_classes.csv") or []}
    b.class_members = {r["_row"]: {"class_id": r["class_id"], "source": r["source"], "licence": r["licence"]}
                       for r in b.curated.get("interaction_classes.csv") or []}
    for r in rules:
        sides = []
        for col in ("class_a", "class_b"):
            ref = r[col]
            if ref.startswith("drug:"):
                ing = b.canon_curated(ref.removeprefix("drug:"), r["_row"])
                sides.append(({ing: ""}, ing))
            elif ref in members:
                sides.append((members[ref], classes.get(ref, ref)))
            else:
                raise KBBuildError(f"{r['_row']}: {col} {ref!r} is neither a class of interaction_classes.csv "
                                   "nor drug:<ingredient>")
        b.class_rules[r["rule_id"]] = {
            "severity": r["severity"], "message": r["message"], "management": r["management"], "source": r["source"],
            "licence": r["licence"], "origin": r["origin"], "row": r["_row"],
            "class_a": sides[0][1], "class_b": sides[1][1]}
        (ma, _), (mb, _) = sides
        for x, row_x in ma.items():
            for y, row_y in mb.items():
                if x == y:
                    continue
                key = "|".join(sorted((x, y)))
                sev = r["severity"]
                old = b.interactions.get(key)
                if old is not None and rank[old["severity"]] <= rank[sev]:
                    continue
                entry = {"severity": sev, "origin": "class_rule", "rule": r["rule_id"],
                         "members": {x: row_x, y: row_y}}
                level = b.ddinter.get(key)
                if level is not None and rank[DDINTER_LEVELS.get(level, "minor")] < rank[sev]:
                    entry["severity"] = DDINTER_LEVELS[level]
                    entry["ddinter_level"] = level
                b.interactions[key] = entry


def canonicalise_tables(b: KBBuild) -> None:
    """The other curated tables with canonical ingredient names, '|' lists split and codes upper-cased; every
    curated name the index does not know is logged (it is kept as written)."""
    for name, rows in b.curated.items():
        if rows is None or name in {"interactions_curated.csv", "interaction_classes.csv",
                                     "interaction_class_rules.csv"}:
            continue
        for r in rows:
            if r.get("ingredient"):
                r["ingredient"] = b.canon_curated(r["ingredient"], r["_row"])
            if name == "allergy_classes.csv":
                r["ingredients"] = [b.canon_curated(x, r["_row"]) for x in r["ingredients"].split("|") if x.strip()]
                r["atc_prefixes"] = [x.strip().upper() for x in r["atc_prefixes"].split("|") if x.strip()]
                r["aliases"] = [clean(x) for x in r["aliases"].split("|") if x.strip()]
            if name == "condition_contraindications.csv":
                r["condition_terms"] = [clean(x) for x in r["condition_terms"].split("|") if x.strip()]
                r["icd10_prefixes"] = [x.strip().upper().replace(".", "") for x in r["icd10_prefixes"].split("|")
                                       if x.strip()]
            if r.get("atc_prefix"):
                r["atc_prefix"] = r["atc_prefix"].upper()
        b.tables[name.removesuffix(".csv")] = rows
    for u in b.unresolved:
        log.warning("curated ingredient not in the name index (kept as written): %s", u)


def fuzzy_vocabulary(b: KBBuild) -> list[str]:
    """The names the fuzzy matcher may correct to: real drug names (ATC/DDInter/curated ingredients and brands)."""
    known_ings = set(b.atc) | {i for k in b.ddinter for i in k.split("|")}
    nb = b.nb
    return sorted({n for n, ings in b.names.items()
                   if 5 <= len(n) <= 30 and n.replace("-", "").replace(" ", "").isalpha()
                   and (all(i in known_ings for i in ings)) and (n in known_ings or n in b.brand_flags
                                                                 or n in nb.single_names or n in b.strengths)})


def assemble(b: KBBuild, started: float) -> dict:
    """The artefact: everything built, its content version (sha256 of all but version and build time), build
    time and duration (``started``: ``time.perf_counter()`` at the start of the build)."""
    kb = {
        "format": KB_FORMAT,
        "sources": b.files,
        "names": b.names,
        "strengths": b.strengths,
        "fuzzy_vocabulary": fuzzy_vocabulary(b),
        "atc": b.atc,
        "atc_names": {c: n for c, n in b.atc_names.items() if len(c) <= 5},
        "ddinter": b.ddinter,
        "ddinter_levels": DDINTER_LEVELS,
        "interactions": b.interactions,
        "interaction_class_rules": b.class_rules,
        "interaction_class_members": b.class_members,
        "duplicate_classes": DUPLICATE_CLASSES,
        "duplicate_source": DUPLICATE_SOURCE,
        "tables": b.tables,
        "missing_tables": [n for n, rows in b.curated.items() if rows is None],
        "unresolved_curated": b.unresolved,
    }
    kb["version"] = content_version(kb)
    kb["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kb["build_seconds"] = round(time.perf_counter() - started, 2)
    return kb


def build_kb(settings: Settings | None = None, curated_dir: Path = CURATED_DIR) -> dict:
    """The KB as named steps: curated tables (validated first) -> names (drug_ner synonyms) -> WHO ATC -> DDInter
    -> name index -> FDA names -> project abbreviations -> ATC links -> interactions (DDInter grades, cited seed
    rules, class rules, curated overrides) -> curated tables canonicalised -> assembled and versioned."""
    settings = settings or get_settings()
    started = time.perf_counter()
    b = KBBuild(settings, curated_dir)
    read_curated_tables(b)
    read_synonyms(b)
    read_atc(b)
    read_ddinter(b)
    index_names(b)
    add_fda_names(b)
    add_abbreviations(b)
    link_atc_codes(b)
    grade_ddinter_pairs(b)
    add_seed_interactions(b)
    add_class_interactions(b)
    add_curated_interactions(b)
    canonicalise_tables(b)
    return assemble(b, started)


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
