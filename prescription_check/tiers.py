"""Alert tiers: which findings hold a prescription for a pharmacist, and which become counselling notes.

Every finding gets a ``tier``:

- ``block``   - its severity is in the policy's block set (default contraindicated): never dispensed as written.
- ``review``  - a pharmacist looks before dispensing.
- ``counsel`` - dispensed, with a counselling note on the answer (``CheckResult.counselling_notes``).
- ``info``    - reported, no action.

How a tier is decided (``TierPolicy.assign``):

1. The *intrinsic* tier from severity: block / review severities of the :class:`prescription_check.policy.Policy`,
   else ``info``; a predicted interaction is ``review`` only when it is a major at or above the policy's
   threshold, else ``info`` (a prediction never blocks).
2. A ``review`` finding whose management, in the curated and cited table
   ``datasets/drugs/interaction_management.csv``, is counselling or routine monitoring (separate the doses,
   routine monitoring, a guideline-recommended combination, a dose within an age limit) becomes ``counsel`` -
   only when its severity is no worse than the row's ``max_severity`` (moderate for every row but one: a documented
   major or contraindicated finding is not softened; the exception is a guideline combination sold as one tablet,
   sumatriptan + naproxen, up to major) and, for rows with a dose condition, only when the prescribed daily dose is
   known and within the limit.  Predicted interactions are matched too: the management belongs to the pair.
3. The tunable part, :class:`QueueSettings`: per finding category and severity, which of the tiers ``counsel`` and
   ``review`` queue the prescription. A tier that queues is the finding's effective tier ``review``; a ``review``
   or ``counsel`` finding that does not queue is effectively ``counsel``. ``block`` always blocks.

The verdict follows the effective tiers: block if any finding is ``block``, review if any is ``review``, else pass.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal, get_args

from prescription_check.schemas import CATEGORIES, SEVERITIES, SEVERITY_RANK, Finding

Tier = Literal["info", "counsel", "review", "block"]
TIERS: tuple[str, ...] = get_args(Tier)
QUEUEABLE_TIERS: tuple[str, ...] = ("counsel", "review")  # block always blocks; info never queues
MANAGEMENT_CLASSES: dict[str, str] = {
    "separate_doses": "separate the doses (absorption)",
    "routine_monitoring": "routine monitoring",
    "guideline_combination": "a guideline-recommended combination, with the guideline's monitoring",
    "dose_within_limit": "the prescribed dose is within the rule's limit",
}
MANAGEMENT_COLUMNS = ("match", "management_class", "max_severity", "dose_drug", "max_daily_mg", "counselling_note",
                      "source_title", "source_url", "source_section")


class ManagementTableError(ValueError):
    """The management table is malformed (the message names the row and column)."""


@dataclass(frozen=True)
class ManagementRow:
    row: int
    kind: Literal["pair", "rule"]
    a: str                      # ingredient or "atc:<prefix>"; for a rule row: the rule id
    b: str                      # ingredient or "atc:<prefix>"; "" for a rule row
    management_class: str
    max_severity: str
    dose_drug: str
    max_daily_mg: float | None
    note: str
    source: str


def _spec(side: str) -> str:
    """A pair side in canonical form: an ingredient in lower case, ``atc:<PREFIX>`` in upper case."""
    side = side.strip()
    return f"atc:{side[4:].strip().upper()}" if side.lower().startswith("atc:") else side.lower()


@dataclass(frozen=True)
class ManagementTable:
    rows: tuple[ManagementRow, ...] = ()
    sha256: str = ""

    @classmethod
    def load(cls, path: str | Path) -> "ManagementTable":
        import hashlib

        path = Path(path)
        data = path.read_bytes()
        text = data.decode("utf-8")
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in MANAGEMENT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManagementTableError(f"{path.name}: missing columns {missing}")
        rows = []
        for n, r in enumerate(reader, start=2):
            where = f"{path.name} row {n}"
            match = (r["match"] or "").strip()
            kind, _, spec = match.partition(":")
            if kind == "pair":
                a, sep, b = spec.partition("|")
                if not sep or not a.strip() or not b.strip():
                    raise ManagementTableError(f"{where}: match must be 'pair:<a>|<b>' (ingredient or atc:<prefix>)")
            elif kind == "rule":
                a, b = spec, ""
                if not a.strip():
                    raise ManagementTableError(f"{where}: match 'rule:' needs a rule id")
            else:
                raise ManagementTableError(f"{where}: match must start with 'pair:' or 'rule:', not {match!r}")
            mclass = (r["management_class"] or "").strip()
            if mclass not in MANAGEMENT_CLASSES:
                raise ManagementTableError(f"{where}: management_class {mclass!r} not in {sorted(MANAGEMENT_CLASSES)}")
            sev = (r["max_severity"] or "").strip()
            if sev not in SEVERITIES or SEVERITY_RANK[sev] == 0:
                raise ManagementTableError(f"{where}: max_severity must be a severity milder than contraindicated")
            dose_drug, limit = (r["dose_drug"] or "").strip(), (r["max_daily_mg"] or "").strip()
            if bool(dose_drug) != bool(limit):
                raise ManagementTableError(f"{where}: dose_drug and max_daily_mg go together")
            try:
                max_mg = float(limit) if limit else None
            except ValueError:
                raise ManagementTableError(f"{where}: max_daily_mg {limit!r} is not a number") from None
            if mclass == "dose_within_limit" and max_mg is None:
                raise ManagementTableError(f"{where}: dose_within_limit needs dose_drug and max_daily_mg")
            for col in ("counselling_note", "source_title", "source_url", "source_section"):
                if not (r[col] or "").strip():
                    raise ManagementTableError(f"{where}: {col} is empty (every row cites its source)")
            if not r["source_url"].strip().startswith(("http://", "https://")):
                raise ManagementTableError(f"{where}: source_url must be an http(s) URL")
            rows.append(ManagementRow(
                row=n, kind=kind, a=_spec(a) if kind == "pair" else a.strip(), b=_spec(b) if kind == "pair" else "",
                management_class=mclass, max_severity=sev, dose_drug=dose_drug.lower(), max_daily_mg=max_mg,
                note=r["counselling_note"].strip(),
                source=f"{r['source_title'].strip()}, {r['source_section'].strip()}: {r['source_url'].strip()}"))
        return cls(tuple(rows), hashlib.sha256(data).hexdigest())

    def __post_init__(self) -> None:
        # indexes (the table is small, but the lookup runs for every review-tier finding of every check)
        by_pair: dict[tuple[str, str], list[ManagementRow]] = {}
        by_rule: dict[str, list[ManagementRow]] = {}
        for row in self.rows:
            if row.kind == "rule":
                by_rule.setdefault(row.a, []).append(row)
            else:
                by_pair.setdefault((row.a, row.b), []).append(row)
                by_pair.setdefault((row.b, row.a), []).append(row)
        prefixes = sorted({spec[4:] for row in self.rows if row.kind == "pair"
                           for spec in (row.a, row.b) if spec.startswith("atc:")})
        object.__setattr__(self, "_by_pair", by_pair)
        object.__setattr__(self, "_by_rule", by_rule)
        object.__setattr__(self, "_prefixes", tuple(prefixes))
        object.__setattr__(self, "_specs", {})  # (ingredient, its ATC codes) -> the specs it matches

    def _specs_of(self, ingredient: str, atc_of: Callable[[str], list[str]]) -> tuple[str, ...]:
        codes = tuple(atc_of(ingredient))
        key = (ingredient, codes)
        found = self._specs.get(key)
        if found is None:
            found = (ingredient, *(f"atc:{p}" for p in self._prefixes
                                   if any(c.upper().startswith(p) for c in codes)))
            if len(self._specs) < 100_000:
                self._specs[key] = found
        return found

    def lookup(self, finding: Finding, atc_of: Callable[[str], list[str]],
               daily_mg: Callable[[str], float | None]) -> ManagementRow | None:
        if finding.rule_id in self._by_rule:
            candidates = self._by_rule[finding.rule_id]
        elif finding.category in ("interaction", "predicted_interaction") and len(finding.drugs) == 2:
            x, y = finding.drugs
            candidates = [row for sx in self._specs_of(x, atc_of) for sy in self._specs_of(y, atc_of)
                          for row in self._by_pair.get((sx, sy), ())]
        else:
            return None
        for row in sorted(set(candidates), key=lambda r: r.row):
            if SEVERITY_RANK[finding.severity] < SEVERITY_RANK[row.max_severity]:
                continue
            if row.max_daily_mg is not None:
                mg = daily_mg(row.dose_drug)
                if mg is None or mg > row.max_daily_mg + 1e-9:
                    continue  # the dose condition cannot be confirmed: no softening
            return row
        return None


Cell = tuple[str, str]  # (category, severity)
DEFAULT_QUEUE: frozenset[str] = frozenset({"review"})


@dataclass(frozen=True)
class QueueSettings:
    """Which tiers queue, per (category, severity); cells not listed use ``default``."""

    default: frozenset[str] = DEFAULT_QUEUE
    cells: dict[Cell, frozenset[str]] = field(default_factory=dict)
    name: str = "default"
    version: int = 0

    def queues(self, category: str, severity: str) -> frozenset[str]:
        return self.cells.get((category, severity), self.default)

    def as_dict(self) -> dict:
        """``{"name", "default": [...], "cells": {"<category>": {"<severity>": [...]}}}`` (the stored document)."""
        cells: dict[str, dict[str, list[str]]] = {}
        for (cat, sev), tiers in sorted(self.cells.items()):
            cells.setdefault(cat, {})[sev] = sorted(tiers)
        return {"name": self.name, "default": sorted(self.default), "cells": cells}

    @classmethod
    def from_dict(cls, doc: dict, version: int = 0) -> "QueueSettings":
        """Validate a settings document; ``ValueError`` names the offending field."""
        if not isinstance(doc, dict):
            raise ValueError("queue settings must be an object")
        unknown = set(doc) - {"name", "default", "cells"}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; allowed: name, default, cells")
        default = _tiers(doc.get("default", sorted(DEFAULT_QUEUE)), "default")
        cells: dict[Cell, frozenset[str]] = {}
        raw = doc.get("cells") or {}
        if not isinstance(raw, dict):
            raise ValueError("cells must be an object {category: {severity: [tiers]}}")
        for cat, per_sev in raw.items():
            if cat not in CATEGORIES:
                raise ValueError(f"cells.{cat}: unknown category; allowed: {', '.join(CATEGORIES)}")
            if not isinstance(per_sev, dict):
                raise ValueError(f"cells.{cat} must be an object {{severity: [tiers]}}")
            for sev, tiers in per_sev.items():
                if sev not in SEVERITIES:
                    raise ValueError(f"cells.{cat}.{sev}: unknown severity; allowed: {', '.join(SEVERITIES)}")
                cells[(cat, sev)] = _tiers(tiers, f"cells.{cat}.{sev}")
        name = str(doc.get("name") or "custom")[:60]
        if "\x00" in name:
            raise ValueError("name must not contain NUL characters")
        return cls(default, cells, name, version)


def _tiers(value, where: str) -> frozenset[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of tiers from {list(QUEUEABLE_TIERS)}")
    bad = set(value) - set(QUEUEABLE_TIERS)
    if bad:
        raise ValueError(f"{where}: {sorted(bad)} cannot be set; queueable tiers are {list(QUEUEABLE_TIERS)} "
                         "(block always blocks, info never queues)")
    return frozenset(value)


# Shipped policies. "default": counselling findings do not queue. "strict": they do, for every category at
# moderate or worse (the behaviour before tiers: every moderate+ finding queues; nothing is left as a note).
PRESETS: dict[str, QueueSettings] = {
    "default": QueueSettings(name="default"),
    "strict": QueueSettings(
        default=DEFAULT_QUEUE, name="strict",
        cells={(c, s): frozenset({"counsel", "review"}) for c in CATEGORIES for s in ("major", "moderate")}),
}


@dataclass(frozen=True)
class TierPolicy:
    management: ManagementTable = field(default_factory=ManagementTable)
    queue: QueueSettings = field(default_factory=QueueSettings)

    def assign(self, findings: Iterable[Finding], *, block: frozenset[str], review: frozenset[str],
               ddi_review_threshold: float, atc_of: Callable[[str], list[str]],
               daily_mg: Callable[[str], float | None]) -> list[dict]:
        """Set ``tier`` (and ``management``) on every finding; return the counselling notes."""
        notes = []
        for f in findings:
            if f.predicted:
                intrinsic = ("review" if f.severity in {"major", "contraindicated"}
                             and (f.probability or 0) >= ddi_review_threshold else "info")
            elif f.severity in block:
                intrinsic = "block"
            elif f.severity in review:
                intrinsic = "review"
            else:
                intrinsic = "info"
            row = None
            if intrinsic == "review":  # documented or predicted: the management is a property of the pair
                row = self.management.lookup(f, atc_of, daily_mg)
                if row is not None:
                    intrinsic = "counsel"
            tier = intrinsic
            if intrinsic in QUEUEABLE_TIERS:
                tier = "review" if intrinsic in self.queue.queues(f.category, f.severity) else "counsel"
            f.tier = tier
            if row is not None:
                f.management = {"class": row.management_class, "note": row.note, "source": row.source,
                                "row": row.row}
            if tier == "counsel":
                notes.append({
                    "rule_id": f.rule_id, "category": f.category, "severity": f.severity, "drugs": list(f.drugs),
                    "note": row.note if row is not None else f.action or f.message,
                    "management_class": row.management_class if row is not None else "not_queued_by_settings",
                    "source": row.source if row is not None else f.source,
                })
        return notes


def verdict_from_tiers(findings: Iterable[Finding]) -> str:
    verdict = "pass"
    for f in findings:
        if f.tier == "block":
            return "block"
        if f.tier == "review":
            verdict = "review"
    return verdict
