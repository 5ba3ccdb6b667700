"""Consistency of datasets/drugs/verification_log.csv with the curated KB tables.

The log records, row by row, the outcome of checking a curated table value against stored public
source text (issue 4: facts only, each row citing a public source).  These tests make sure that the
log stays true to the tables it describes:

* the log has the documented schema and allowed statuses;
* every logged row that was kept (confirmed / corrected / unverifiable) still exists in its table;
* a row logged as ``removed`` is really absent and is named in the "left out" list of TABLES.md;
* a ``corrected`` value is the value the table holds now, and differs from the old value;
* a ``confirmed`` or ``unverifiable`` value is still the value in the table (a later edit of a
  checked value must re-check it and update the log);
* the per-table counts in the TABLES.md "Verification" section match the log.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

DRUG_DIR = Path(__file__).resolve().parents[2] / "datasets" / "drugs"
LOG = DRUG_DIR / "verification_log.csv"
LOG_COLUMNS = ["table", "row_key", "field", "table_value", "source_value", "status", "evidence",
               "evidence_url", "checked_on"]
STATUSES = ("confirmed", "corrected", "removed", "unverifiable")


def _key(table: str, row: dict[str, str]) -> str:
    """The row_key format used in the log for each table (documented in TABLES.md)."""
    if table == "dose_limits.csv":  # a paediatric row with an age band: |<age_min_days>-<age_max_days> appended
        band = f"|{row['age_min_days']}-{row['age_max_days']}" if row.get("age_min_days") or row.get("age_max_days") \
            else ""
        return f"{row['ingredient']}|{row['route']}|{row['population']}{band}"
    if table == "renal_dosing.csv":
        return f"{row['ingredient']}|{row['egfr_min']}|{row['egfr_max']}|{row['measure']}"
    if table == "hepatic_dosing.csv":
        return f"{row['ingredient']}|{row['min_grade']}"
    if table == "pregnancy_lactation.csv":
        return f"{row['ingredient'] or row['atc_prefix']}|{row['context']}|{row['trimester']}"
    if table == "age_rules.csv":
        return f"{row['ingredient'] or row['atc_prefix']}|{row['age_min_years']}|{row['age_max_years']}"
    if table == "condition_contraindications.csv":
        return f"{row['ingredient'] or row['atc_prefix']}|{row['condition_terms'].split('|')[0]}"
    if table == "allergy_classes.csv":
        return row["class_id"]
    if table == "cross_sensitivity.csv":
        return f"{row['allergy_class']}|{row['cross_class']}"
    if table == "interactions_curated.csv":  # unordered pair
        return "|".join(sorted([row["drug_a"], row["drug_b"]]))
    raise KeyError(table)


def _lookup_key(table: str, row_key: str) -> str:
    return "|".join(sorted(row_key.split("|"))) if table == "interactions_curated.csv" else row_key


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def log_rows() -> list[dict[str, str]]:
    assert LOG.exists(), f"missing {LOG}"
    header, rows = _read(LOG)
    assert header == LOG_COLUMNS, f"verification_log.csv header {header} != {LOG_COLUMNS}"
    assert rows, "verification_log.csv is empty"
    return rows


@pytest.fixture(scope="module")
def tables(log_rows) -> dict[str, tuple[list[str], dict[str, dict[str, str]]]]:
    out = {}
    for name in sorted({r["table"] for r in log_rows}):
        path = DRUG_DIR / name
        assert path.exists(), f"log refers to unknown table {name}"
        header, rows = _read(path)
        indexed: dict[str, dict[str, str]] = {}
        for row in rows:
            indexed.setdefault(_key(name, row), row)
        out[name] = (header, indexed)
    return out


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def test_log_schema(log_rows, tables):
    seen = set()
    for i, row in enumerate(log_rows, start=2):
        where = f"verification_log.csv:{i}"
        assert None not in row and all(v is not None for v in row.values()), f"{where}: wrong column count"
        assert row["status"] in STATUSES, f"{where}: status {row['status']!r} not in {STATUSES}"
        header, _ = tables[row["table"]]
        assert row["field"] in header, f"{where}: {row['field']!r} is not a column of {row['table']}"
        assert row["row_key"].strip() and row["row_key"] == row["row_key"].strip(), f"{where}: empty row_key"
        date.fromisoformat(row["checked_on"])
        assert len(row["evidence"]) <= 200, f"{where}: evidence longer than 200 characters"
        if row["status"] != "unverifiable":
            assert row["evidence"].strip(), f"{where}: a {row['status']} row needs an evidence quote"
            assert re.match(r"^https?://\S+$", row["evidence_url"]), \
                f"{where}: a {row['status']} row needs the URL of the stored text, got {row['evidence_url']!r}"
        else:
            assert row["evidence"].strip(), f"{where}: say what was looked for and not found"
        ident = (row["table"], _lookup_key(row["table"], row["row_key"]), row["field"])
        assert ident not in seen, f"{where}: duplicate log entry {ident}"
        seen.add(ident)


def test_kept_rows_exist_and_match(log_rows, tables):
    for i, row in enumerate(log_rows, start=2):
        if row["status"] == "removed":
            continue
        where = f"verification_log.csv:{i} ({row['table']} {row['row_key']})"
        _, indexed = tables[row["table"]]
        target = indexed.get(_lookup_key(row["table"], row["row_key"]))
        assert target is not None, f"{where}: no such row in the table"
        current = target[row["field"]]
        if row["status"] == "corrected":
            assert _same(current, row["source_value"]), \
                f"{where}: corrected to {row['source_value']!r} but the table holds {current!r}"
            assert not _same(row["table_value"], row["source_value"]), \
                f"{where}: a correction must change the value"
        else:
            assert _same(current, row["table_value"]), \
                f"{where}: logged as {row['status']} with value {row['table_value']!r}, table now holds " \
                f"{current!r}; re-check the row and update the log"


def test_removed_rows_are_gone_and_documented(log_rows, tables):
    removed = [r for r in log_rows if r["status"] == "removed"]
    text = (DRUG_DIR / "TABLES.md").read_text(encoding="utf-8")
    for row in removed:
        _, indexed = tables[row["table"]]
        assert _lookup_key(row["table"], row["row_key"]) not in indexed, \
            f"{row['table']} {row['row_key']} is logged as removed but is still in the table"
        name = row["row_key"].split("|")[0]
        assert name in text, f"removed row {row['row_key']} is not named in TABLES.md (rows left out)"


def test_tables_md_counts_match_log(log_rows):
    """TABLES.md carries a Verification section whose per-table counts are the log's counts."""
    text = (DRUG_DIR / "TABLES.md").read_text(encoding="utf-8")
    assert "## Verification" in text, "TABLES.md has no Verification section"
    section = text.split("## Verification", 1)[1]
    counts = Counter((r["table"], r["status"]) for r in log_rows)
    for table in sorted({r["table"] for r in log_rows}):
        expected = " | ".join(str(counts[(table, s)]) for s in STATUSES)
        assert re.search(rf"\|\s*`{re.escape(table)}`\s*\|\s*{re.escape(expected)}\s*\|", section), \
            f"TABLES.md Verification table row for {table} must read '| `{table}` | {expected} |'"


def test_every_contraindicated_interaction_was_checked(log_rows, tables):
    """The highest-risk interaction rows (contraindicated pairs) all carry a verification outcome."""
    path = DRUG_DIR / "interactions_curated.csv"
    _, rows = _read(path)
    logged = {_lookup_key(r["table"], r["row_key"]) for r in log_rows if r["table"] == path.name}
    missing = [_key(path.name, r) for r in rows if r["severity"] == "contraindicated"
               and _key(path.name, r) not in logged]
    assert not missing, f"contraindicated pairs without a verification entry: {missing[:10]}"


def test_every_hepatic_row_was_checked(log_rows, tables):
    """The hepatic table is new (2026-11-30): every row carries a verification outcome, and every numeric
    hepatic daily maximum was confirmed against source text."""
    path = DRUG_DIR / "hepatic_dosing.csv"
    _, rows = _read(path)
    logged = {(r["row_key"], r["field"]): r["status"] for r in log_rows if r["table"] == path.name}
    missing = [_key(path.name, r) for r in rows if not any(k == _key(path.name, r) for k, _ in logged)]
    assert not missing, f"hepatic rows without a verification entry: {missing}"
    for r in rows:
        if r["max_daily_mg"]:
            assert logged.get((_key(path.name, r), "max_daily_mg")) == "confirmed", \
                f"hepatic maximum {_key(path.name, r)} = {r['max_daily_mg']} mg/day is not confirmed in the log"
