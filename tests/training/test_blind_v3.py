"""The third blind urgency set (datasets/triage/blind/urgency_blind_v3.csv, issue 11) and the team-written validation
trap set (datasets/triage/validation/urgency_traps_val.csv) load through the eval-urgency readers, have the documented
counts and cite a source per row.  Reads the files only; no model or rule is run on them here."""

from __future__ import annotations

import csv
import re
from collections import Counter

from training import urgency_train

TRAP_STYLES = {"negation_trap", "history_trap"}


def _raw(path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_blind_v3_loads_with_the_documented_counts_and_v1_columns():
    rows = urgency_train.blind_rows_v3()
    assert len(rows) == 101 and len({r["id"] for r in rows}) == 101
    assert Counter(r["urgency"] for r in rows) == {"emergency": 37, "urgent": 8, "routine": 23, "self_care": 33}
    with urgency_train.BLIND_SET.open(newline="", encoding="utf-8") as fh:
        v1_columns = next(csv.reader(fh))
    assert list(_raw(urgency_train.BLIND_SET_V3)[0]) == v1_columns


def test_blind_v3_traps_and_emergencies_beside_a_denial():
    raw = _raw(urgency_train.BLIND_SET_V3)
    tags = {r["id"]: r for r in _raw(urgency_train.BLIND_SET_V3.parent / "urgency_blind_v3_tags.csv")}
    assert set(tags) == {r["id"] for r in raw}
    traps = [r for r in raw if r["style"] in TRAP_STYLES]
    assert len(traps) == 54 and all(r["urgency"] != "emergency" for r in traps)
    assert all(tags[r["id"]]["trap_kind"] for r in traps)
    emergencies = [r for r in raw if r["urgency"] == "emergency"]
    assert len(emergencies) == 37 and all(tags[r["id"]]["emergency_negates_other"] for r in emergencies)
    # every label names its guidance; rows without a URL say the page was not re-read
    assert all(re.search(r"https?://\S+", r["basis"]) or "not re-read" in r["basis"] for r in raw)
    assert sum(bool(re.search(r"https?://\S+", r["basis"])) for r in raw) >= 75


def test_validation_traps_are_team_written_validation_only_and_not_blind_rows():
    raw = _raw(urgency_train.VALIDATION_TRAPS)
    rows = urgency_train.validation_trap_rows()
    assert len(rows) == len(raw) == 63
    assert all("team-written" in r["provenance"] and "validation only" in r["provenance"] for r in raw)
    traps = [r for r in raw if r["style"] in TRAP_STYLES]
    assert len(traps) == 38 and all(r["urgency"] != "emergency" for r in traps)
    assert sum(r["urgency"] == "emergency" for r in raw) == 25
    assert all(r["basis"].strip() for r in raw)
    blind = {r["text"].strip().lower() for p in (urgency_train.BLIND_SET, urgency_train.BLIND_SET_V2,
                                                 urgency_train.BLIND_SET_V3) for r in _raw(p)}
    assert not blind & {r["text"].strip().lower() for r in raw}
