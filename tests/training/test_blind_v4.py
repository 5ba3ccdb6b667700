"""The fourth blind urgency set (datasets/triage/blind/urgency_blind_v4.csv, issue 11: past / history / denied-after
traps and emergencies in lay and atypical words) loads through the eval-urgency reader, has the documented counts and
cites a source per row.  Reads the files only; no model or rule is run on them here."""

from __future__ import annotations

import csv
import re
from collections import Counter

from training import urgency_train

TRAP_STYLES = {"negation_trap", "history_trap"}


def _raw(path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_blind_v4_loads_with_the_documented_counts_and_v1_columns():
    rows = urgency_train.blind_rows_v4()
    assert len(rows) == 85 and len({r["id"] for r in rows}) == 85
    assert Counter(r["urgency"] for r in rows) == {"emergency": 37, "urgent": 6, "routine": 17, "self_care": 25}
    with urgency_train.BLIND_SET.open(newline="", encoding="utf-8") as fh:
        v1_columns = next(csv.reader(fh))
    assert list(_raw(urgency_train.BLIND_SET_V4)[0]) == v1_columns


def test_blind_v4_traps_are_never_emergencies_and_every_label_is_cited():
    raw = _raw(urgency_train.BLIND_SET_V4)
    tags = {r["id"]: r for r in _raw(urgency_train.BLIND_SET_V4.parent / "urgency_blind_v4_tags.csv")}
    assert set(tags) == {r["id"] for r in raw}
    traps = [r for r in raw if r["style"] in TRAP_STYLES]
    assert len(traps) == 34 and all(r["urgency"] != "emergency" for r in traps)
    assert all(tags[r["id"]]["trap_kind"] for r in traps)
    assert not any(tags[r["id"]]["trap_kind"] for r in raw if r["style"] not in TRAP_STYLES)
    # 41 labels give the URL of the page read (all emergencies but the head injury); the rest name an NHS page
    # "not re-read"
    assert sum(bool(re.search(r"https?://\S+", r["basis"])) for r in raw) == 41
    assert sum(bool(re.search(r"https?://\S+", r["basis"])) for r in raw if r["urgency"] == "emergency") == 36
    assert all(re.search(r"https?://\S+", r["basis"]) or "not re-read" in r["basis"] for r in raw)


def test_blind_v4_shares_no_text_with_the_earlier_blind_or_validation_sets():
    v4 = {r["text"].strip().lower() for r in _raw(urgency_train.BLIND_SET_V4)}
    others = {r["text"].strip().lower() for p in (urgency_train.BLIND_SET, urgency_train.BLIND_SET_V2,
                                                  urgency_train.BLIND_SET_V3, urgency_train.VALIDATION_TRAPS)
              for r in _raw(p)}
    assert not v4 & others
