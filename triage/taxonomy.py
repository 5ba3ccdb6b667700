"""The specialty-center taxonomy triage routes to.

A complaint is routed to one of the *routable* centers; ``emergency`` is never predicted by the
classifier and is only set by red-flag rules.  The taxonomy is data (``datasets/triage/taxonomy.json``)
with a version that is bumped whenever centers change; the classifier's label order is
``Taxonomy.model_labels()``.  No heavy imports here: serving loads this module.

    >>> from triage.taxonomy import load_taxonomy
    >>> tax = load_taxonomy()
    >>> tax.get("ent").name_zh
    '耳鼻喉科'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

DEFAULT_TAXONOMY_PATH = Path(__file__).resolve().parent.parent / "datasets" / "triage" / "taxonomy.json"
EMERGENCY_CENTER = "emergency"

# Urgency levels, most to least urgent (the one vocabulary: urgency rules, the API schema, evaluation).
Urgency = Literal["emergency", "urgent", "routine", "self_care"]
URGENCY_LEVELS: tuple[str, ...] = get_args(Urgency)

_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class TaxonomyError(ValueError):
    """The taxonomy file is missing or malformed."""


class UnknownCenterError(KeyError, ValueError):
    """A center id that the taxonomy does not define."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0]) if self.args else "unknown center"


@dataclass(frozen=True)
class Center:
    id: str
    name_en: str
    name_zh: str
    description: str
    routable: bool = True  # False for "emergency": never predicted by the model, only set by red-flag rules


@dataclass(frozen=True)
class Taxonomy:
    version: str
    centers: tuple[Center, ...]

    def ids(self) -> list[str]:
        """All center ids, in file order (routable and not)."""
        return [c.id for c in self.centers]

    def model_labels(self) -> list[str]:
        """Routable center ids in a fixed order: the classifier's label order."""
        return [c.id for c in self.centers if c.routable]

    def get(self, center_id: str) -> Center:
        for center in self.centers:
            if center.id == center_id:
                return center
        raise UnknownCenterError(
            f"unknown center id {center_id!r} (taxonomy {self.version}); known: {', '.join(self.ids())}"
        )

    def __contains__(self, center_id: object) -> bool:
        return any(c.id == center_id for c in self.centers)

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "centers": [
                {
                    "id": c.id,
                    "name_en": c.name_en,
                    "name_zh": c.name_zh,
                    "description": c.description,
                    "routable": c.routable,
                }
                for c in self.centers
            ],
        }


def parse_taxonomy(data: dict, origin: str = "<dict>") -> Taxonomy:
    """Build and validate a Taxonomy from its JSON form."""
    if not isinstance(data, dict) or not str(data.get("version") or "").strip():
        raise TaxonomyError(f"taxonomy {origin}: missing 'version'")
    raw = data.get("centers")
    if not isinstance(raw, list) or not raw:
        raise TaxonomyError(f"taxonomy {origin}: 'centers' must be a non-empty list")
    centers: list[Center] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise TaxonomyError(f"taxonomy {origin}: center #{i} is not an object")
        for field in ("id", "name_en", "name_zh", "description"):
            if not isinstance(item.get(field), str) or not item[field].strip():
                raise TaxonomyError(f"taxonomy {origin}: center #{i} ({item.get('id')!r}) lacks {field!r}")
        cid = item["id"]
        if not _ID_RE.match(cid):
            raise TaxonomyError(f"taxonomy {origin}: center id {cid!r} must be lower_snake_case")
        if cid in seen:
            raise TaxonomyError(f"taxonomy {origin}: duplicate center id {cid!r}")
        seen.add(cid)
        routable = item.get("routable", True)
        if not isinstance(routable, bool):
            raise TaxonomyError(f"taxonomy {origin}: center {cid!r} 'routable' must be true/false")
        if cid == EMERGENCY_CENTER and routable:
            raise TaxonomyError(f"taxonomy {origin}: {EMERGENCY_CENTER!r} must have routable=false")
        centers.append(Center(cid, item["name_en"], item["name_zh"], item["description"], routable))
    if not any(c.routable for c in centers):
        raise TaxonomyError(f"taxonomy {origin}: no routable center")
    return Taxonomy(version=str(data["version"]), centers=tuple(centers))


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> Taxonomy:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TaxonomyError(f"taxonomy file {p} is not valid JSON: {exc}") from exc
    return parse_taxonomy(data, str(p))


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load the taxonomy (default ``datasets/triage/taxonomy.json``)."""
    p = Path(path) if path is not None else DEFAULT_TAXONOMY_PATH
    if not p.is_file():
        raise TaxonomyError(f"taxonomy file not found: {p}")
    return _load_cached(str(p.resolve()), p.stat().st_mtime)


__all__ = [
    "Center",
    "Taxonomy",
    "TaxonomyError",
    "UnknownCenterError",
    "EMERGENCY_CENTER",
    "DEFAULT_TAXONOMY_PATH",
    "load_taxonomy",
    "parse_taxonomy",
]
