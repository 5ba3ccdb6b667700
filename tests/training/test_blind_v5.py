"""The fifth blind urgency set (urgency_blind_v5.csv: clinical and lay vignettes, traps) and the third blind routing
set (routing_blind_v3.csv), both written 2026-12-07 before any model or rule ran on them: they load through the
eval readers, have the documented counts, cite a source per urgency label and share no text with earlier sets.
Reads the files only; no model or rule is run on them here."""

from __future__ import annotations

import csv
import re
from collections import Counter

from evaluation.routing_eval import read_rows
from training import urgency_train
from triage.taxonomy import load_taxonomy

TRAP_STYLES = {"negation_trap", "history_trap"}
ROUTING_V3 = urgency_train.BLIND_SET.parent / "routing_blind_v3.csv"


def _raw(path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_blind_v5_loads_with_the_documented_counts_and_v1_columns():
    rows = urgency_train.blind_rows_v5()
    assert len(rows) == 175 and len({r["id"] for r in rows}) == 175
    assert Counter(r["urgency"] for r in rows) == {"emergency": 50, "urgent": 42, "routine": 44, "self_care": 39}
    styles = Counter(r["group"] for r in rows)
    assert styles["clinical_vignette"] == 53 and styles["lay_vignette"] == 47
    with urgency_train.BLIND_SET.open(newline="", encoding="utf-8") as fh:
        v1_columns = next(csv.reader(fh))
    assert list(_raw(urgency_train.BLIND_SET_V5)[0]) == v1_columns


def test_blind_v5_traps_are_tagged_never_emergencies_and_every_label_is_cited():
    raw = _raw(urgency_train.BLIND_SET_V5)
    tags = {r["id"]: r["trap_kind"] for r in _raw(urgency_train.BLIND_SET_V5.parent / "urgency_blind_v5_tags.csv")}
    traps = [r for r in raw if r["style"] in TRAP_STYLES]
    assert len(traps) == 27 and {r["id"] for r in traps} == set(tags)
    assert all(r["urgency"] != "emergency" for r in traps)
    assert set(tags.values()) <= {"negated", "history", "family", "other_person", "hypothetical"}
    # every emergency names the page its writer read; the other labels a URL or an NHS page "not re-read"
    assert all(re.search(r"https?://\S+", r["basis"]) for r in raw if r["urgency"] == "emergency")
    assert all(re.search(r"https?://\S+", r["basis"]) or "not re-read" in r["basis"] for r in raw)


def test_routing_v3_covers_every_routable_center_with_valid_labels():
    rows = read_rows(ROUTING_V3)
    routable = set(load_taxonomy().model_labels())
    counts = Counter(r["center"] for r in rows)
    assert len(rows) == 212 and len({r["id"] for r in rows}) == 212
    assert set(counts) == routable and min(counts.values()) >= 11


def test_new_sets_share_no_text_with_the_earlier_blind_or_validation_sets():
    def texts(path):
        return {r["text"].strip().lower() for r in _raw(path)}

    earlier = set().union(*(texts(p) for p in (urgency_train.BLIND_SET, urgency_train.BLIND_SET_V2,
                                               urgency_train.BLIND_SET_V3, urgency_train.BLIND_SET_V4,
                                               urgency_train.VALIDATION_TRAPS,
                                               ROUTING_V3.parent / "routing_blind_v1.csv",
                                               ROUTING_V3.parent / "routing_blind_v2.csv")))
    assert not texts(urgency_train.BLIND_SET_V5) & earlier
    assert not texts(ROUTING_V3) & earlier
