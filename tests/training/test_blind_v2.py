"""The second blind urgency set (datasets/triage/blind/urgency_blind_v2.csv) loads through the same reader as v1
(``eval-urgency --sets blind2``), has the documented counts, and every label cites a public page by URL.  Reads the
file only; no model or rule is run on it here."""

from __future__ import annotations

import csv
import re
from collections import Counter

from training import urgency_train

TRAP_STYLES = {"negation_trap", "history_trap"}


def _raw_rows() -> list[dict]:
    with urgency_train.BLIND_SET_V2.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_blind_v2_loads_with_the_documented_counts():
    rows = urgency_train.blind_rows_v2()
    assert len(rows) == 100
    assert Counter(r["urgency"] for r in rows) == {"emergency": 30, "urgent": 25, "routine": 25, "self_care": 20}
    assert len({r["id"] for r in rows}) == 100
    assert all(r["text"].strip() and r["group"] for r in rows)


def test_blind_v2_has_v1_columns_citations_and_traps():
    with urgency_train.BLIND_SET.open(newline="", encoding="utf-8") as fh:
        v1_columns = next(csv.reader(fh))
    raw = _raw_rows()
    assert list(raw[0]) == v1_columns
    assert all(re.search(r"https?://\S+", r["basis"]) for r in raw)  # every label cites a page it was checked on
    traps = [r for r in raw if r["style"] in TRAP_STYLES]
    assert len(traps) >= 15
    assert all(r["urgency"] != "emergency" for r in traps)  # labelled with what is actually present
