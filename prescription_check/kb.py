"""Load the KB artefact and precompute the indexes the rules use (one dict lookup per question)."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from prescription_check.normalize import Normalizer, clean

log = logging.getLogger("prescription_check.kb")

KB_FORMAT = 1  # the artefact layout this reader understands (``training.kb_build`` writes it)
# The project's curated tables (in ``datasets/drugs``) an artefact is built from, and the abbreviations list;
# an artefact records the sha256 of each as ``sources["project/<name>"]``.
CURATED_TABLES: tuple[str, ...] = (
    "dose_limits.csv", "renal_dosing.csv", "hepatic_dosing.csv", "pregnancy_lactation.csv", "age_rules.csv",
    "condition_contraindications.csv", "allergy_classes.csv", "cross_sensitivity.csv", "interactions_curated.csv",
    "interaction_classes.csv", "interaction_class_rules.csv",
)
ABBREVIATIONS_TABLE = "abbreviations.csv"


class KBError(RuntimeError):
    """The KB artefact is missing or unreadable."""


class KBStaleError(KBError):
    """The KB artefact was built from other versions of the curated tables than the ones beside it."""


def hash_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stale_reason(sources: dict, curated_dir: Path) -> str | None:
    """Why an artefact built from ``sources`` (its recorded file hashes) no longer matches the curated tables
    in ``curated_dir``, or None when it does.  Cheap (the tables are small): the service runs it at every
    checker load, so a deployment that updated the tables never keeps checking against the old ones."""
    for name in [*CURATED_TABLES, ABBREVIATIONS_TABLE]:
        path = Path(curated_dir) / name
        recorded = sources.get(f"project/{name}")
        if not path.exists():
            if recorded is not None:
                return f"{name} was removed since the KB was built"
            continue
        if recorded is None:
            return f"{name} is not in the KB (added since it was built)"
        if recorded != hash_file(path):
            return f"{name} changed since the KB was built"
    return None


def _read(path: Path) -> dict:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data)


@dataclass
class KnowledgeBase:
    raw: dict
    path: Path | None = None
    load_seconds: float = 0.0
    version: str = ""
    normalizer: Normalizer = field(init=False)

    def __post_init__(self):
        kb = self.raw
        self.version = kb["version"]
        self.normalizer = Normalizer(kb["names"], kb.get("strengths"), kb.get("fuzzy_vocabulary"))
        self.atc: dict[str, list[str]] = kb["atc"]
        self.atc_names: dict[str, str] = kb["atc_names"]
        self.ddinter: dict[str, str] = kb["ddinter"]
        self.ddinter_levels: dict[str, str] = kb["ddinter_levels"]
        self.interactions: dict[str, dict] = kb["interactions"]
        # class-level interaction rules (rule id -> message, management, source) and the citation of each class
        # membership they were expanded through (member key -> source); older artefacts have neither
        self.class_rules: dict[str, dict] = kb.get("interaction_class_rules", {})
        self.class_members: dict[str, dict] = kb.get("interaction_class_members", {})
        self.tables: dict[str, list[dict]] = kb["tables"]
        self.missing_tables: list[str] = kb.get("missing_tables", [])
        # duplicate classes: ATC prefix -> class id (longest prefix wins)
        self.dup_classes = kb["duplicate_classes"]
        self.dup_prefixes: list[tuple[str, str]] = sorted(
            ((p, cid) for cid, c in self.dup_classes.items() for p in c["atc"]), key=lambda x: -len(x[0]))
        self.duplicate_source = kb.get("duplicate_source", "")
        # per-table indexes: ingredient -> rows ; atc-prefix rows kept as a list (few)
        self.by_ingredient: dict[str, dict[str, list[dict]]] = {}
        self.by_atc_prefix: dict[str, list[dict]] = {}
        for name, rows in self.tables.items():
            ing_idx: dict[str, list[dict]] = {}
            atc_rows: list[dict] = []
            for r in rows:
                if r.get("ingredient"):
                    ing_idx.setdefault(r["ingredient"], []).append(r)
                elif r.get("atc_prefix"):
                    atc_rows.append(r)
            self.by_ingredient[name] = ing_idx
            self.by_atc_prefix[name] = atc_rows
        # allergy classes
        self.allergy_classes: dict[str, dict] = {r["class_id"]: r for r in self.tables.get("allergy_classes", [])}
        self.allergy_alias: dict[str, str] = {}
        for cid, r in self.allergy_classes.items():
            for alias in [*r["aliases"], clean(r["name"]), clean(cid)]:
                self.allergy_alias.setdefault(alias, cid)
        self.cross: dict[str, list[dict]] = {}
        for r in self.tables.get("cross_sensitivity", []):
            self.cross.setdefault(r["allergy_class"], []).append(r)
        self._class_cache: dict[str, tuple[str, ...]] = {}
        self._dup_cache: dict[str, str | None] = {}
        self._rows_cache: dict[tuple[str, str], list[dict]] = {}

    # ------------------------------------------------------------------ lookups
    @classmethod
    def load(cls, path: Path) -> "KnowledgeBase":
        path = Path(path)
        if not path.exists():
            raise KBError(f"KB artefact {path} does not exist (build it: python -m training kb)")
        t0 = time.perf_counter()
        try:
            raw = _read(path)
        except (OSError, ValueError) as exc:
            raise KBError(f"KB artefact {path} is unreadable ({exc}); rebuild it: python -m training kb") from exc
        if raw.get("format") != KB_FORMAT:
            raise KBError(f"KB artefact {path} has format {raw.get('format')!r}, this code reads {KB_FORMAT}; "
                          "rebuild it: python -m training kb")
        kb = cls(raw, path=path)
        kb.load_seconds = time.perf_counter() - t0
        return kb

    def atc_codes(self, ingredient: str) -> list[str]:
        return self.atc.get(ingredient, [])

    def interaction(self, a: str, b: str) -> tuple[str, dict] | None:
        key = f"{a}|{b}" if a < b else f"{b}|{a}"
        hit = self.interactions.get(key)
        if hit is not None:
            return key, hit
        level = self.ddinter.get(key)
        if level is not None:
            return key, {"severity": self.ddinter_levels.get(level, "minor"), "ddinter_level": level,
                         "origin": "ddinter"}
        return None

    def duplicate_class(self, ingredient: str) -> str | None:
        try:
            return self._dup_cache[ingredient]
        except KeyError:
            pass
        found = None
        for code in self.atc.get(ingredient, ()):
            for prefix, cid in self.dup_prefixes:
                if code.startswith(prefix):
                    found = cid
                    break
            if found:
                break
        self._dup_cache[ingredient] = found
        return found

    def allergy_classes_of(self, ingredient: str) -> tuple[str, ...]:
        """Allergy classes an ingredient belongs to (by listed ingredient or ATC prefix)."""
        hit = self._class_cache.get(ingredient)
        if hit is not None:
            return hit
        codes = self.atc.get(ingredient, ())
        out = tuple(cid for cid, r in self.allergy_classes.items()
                    if ingredient in r["ingredients"] or any(c.startswith(p) for c in codes for p in r["atc_prefixes"]))
        self._class_cache[ingredient] = out
        return out

    def rows_for(self, table: str, ingredient: str) -> list[dict]:
        """Rows of a table for an ingredient: by name, plus rows keyed by an ATC prefix of it."""
        key = (table, ingredient)
        hit = self._rows_cache.get(key)
        if hit is not None:
            return hit
        rows = list(self.by_ingredient.get(table, {}).get(ingredient, ()))
        codes = self.atc.get(ingredient, ())
        for r in self.by_atc_prefix.get(table, ()):
            if any(c.startswith(r["atc_prefix"]) for c in codes):
                rows.append(r)
        self._rows_cache[key] = rows
        return rows
