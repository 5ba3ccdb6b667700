"""Feedback snapshots and the live comparison, against real databases (no model needed: answers are recorded
through the service's own writer functions, decisions through the real review API)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.feedback import ShadowRow, make_record, record_outcome, write
from serving.settings import Settings
from serving.triage_service import TriageOutcome as Answer
from tests.plugins.db import API_KEYS, auth
from tests.serving.test_reviews_api import FLAGGED
from training import feedback_data, live
from triage.taxonomy import load_taxonomy

T0 = datetime(2026, 11, 30, 8, tzinfo=UTC)


def _answer(center: str, version: str = "3") -> Answer:
    return Answer(centers=[(center, 0.7), ("dermatology", 0.3)], abstained=False, abstain_reason=None, flags=[],
                  urgency="routine", urgency_reasons=[], model_version=version, taxonomy_version="1")


@pytest.fixture
def fb_settings(db_url, tmp_path) -> Settings:
    return Settings(work_dir=tmp_path / "var", database_url=db_url, feedback_keep_text=True,
                    feedback_outcome_days=3650)


def _fill(settings: Settings, n: int = 10) -> None:
    """n answers one hour apart (every other with consent), outcomes for all but the last, shadow rows for all."""
    from serving.db.session import session_scope

    taxonomy = load_taxonomy()
    with session_scope(settings) as s:
        recs, shadows = [], []
        for i in range(n):
            at = T0 + timedelta(hours=i)
            recs.append(make_record(settings, f"r{i:02d}", f"complaint number {i}", "en", i % 2 == 0,
                                    _answer("respiratory"), {"centers": [{"id": "respiratory"}]}, now=at))
            shadows.append(ShadowRow(f"r{i:02d}", at, "3", "4", "respiratory",
                                     "respiratory" if i % 3 else "cardiology", 0.7, 0.6, False, False, bool(i % 3)))
        write(s, recs, shadows)
    with session_scope(settings) as s:
        for i in range(n - 1):
            record_outcome(s, settings, taxonomy, f"r{i:02d}", "respiratory" if i < 6 else "cardiology", None,
                           "clinician:key-x", now=T0 + timedelta(hours=i, minutes=30))


def test_feedback_snapshot_is_versioned_hashed_and_time_split(fb_settings, tmp_path):
    _fill(fb_settings)
    manifest = feedback_data.snapshot("feedback", fb_settings, out=tmp_path / "snaps")
    assert manifest["rows"] == 9 and manifest["rows_with_text"] == 5  # consent on even rows only
    assert manifest["time_range"]["first"].startswith("2026-11-30T08:00")
    assert manifest["model_versions"] == {"3": 9} and manifest["top1_accuracy"] == pytest.approx(6 / 9)
    assert manifest["version"].endswith(manifest["sha256"][:12])
    frame, loaded = feedback_data.load_snapshot(manifest["path"])
    assert json.loads((tmp_path / "snaps" / manifest["version"] / "manifest.json").read_text())["rows"] == 9
    assert frame.loc[frame["request_id"] == "r01", "text"].isna().all()
    labels = load_taxonomy().model_labels()
    train, test, cut = feedback_data.time_split(frame, labels, 0.4)
    assert list(train["request_id"]) == ["r00", "r02", "r04"] and list(test["request_id"]) == ["r06", "r08"]
    assert cut == test["answered_at"].iloc[0] and train["answered_at"].max() < cut

    # a changed file is refused
    path = tmp_path / "snaps" / manifest["version"] / "data.parquet"
    frame.iloc[:3].to_parquet(path, index=False)
    with pytest.raises(feedback_data.SnapshotError, match="sha256"):
        feedback_data.load_snapshot(manifest["path"])


def test_decisions_snapshot_exports_pharmacist_decisions(review_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    app = review_app(url)
    with TestClient(app) as client:
        r = client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber"))
        rid = r.json()["review_id"]
        d = client.post(f"/v1/reviews/{rid}/decision", json={"decision": "reject", "reason_code": "unsafe_interaction",
                                                              "note": "free text stays out"},
                        headers=auth("pharmacist"))
        assert d.status_code == 200, d.text
        client.post("/v1/prescriptions/check", json={**FLAGGED, "id": "rx-2"}, headers=auth("prescriber"))
    settings = Settings(work_dir=tmp_path / "var", database_url=url, api_keys=API_KEYS)
    manifest = feedback_data.snapshot("decisions", settings, out=tmp_path / "snaps")
    assert manifest["rows"] == 1 and manifest["decisions"] == {"reject": 1}
    frame, _ = feedback_data.load_snapshot(manifest["path"])
    row = frame.iloc[0]
    assert row["reason_code"] == "unsafe_interaction" and "note" not in frame.columns
    assert {"warfarin", "aspirin"} <= set(json.loads(row["drugs"]))
    assert any(f["category"] == "interaction" for f in json.loads(row["findings"]))


def test_live_comparison_and_gate(fb_settings):
    _fill(fb_settings)
    result = live.compare_live(fb_settings)
    stats = result["challengers"]["4"]
    assert (stats["scored"], stats["with_outcome"]) == (10, 9)
    assert stats["agreement"] == pytest.approx(6 / 10)
    # outcomes: r00-r05 respiratory, r06-r08 cardiology; the challenger said cardiology on r00, r03, r06
    assert stats["champion_accuracy"] == pytest.approx(6 / 9)
    assert stats["challenger_accuracy"] == pytest.approx(5 / 9)
    assert live.live_gate_checks({"live": {"min_samples": 0}}, "4", fb_settings) == []
    (name, passed, detail), = live.live_gate_checks({"live": {"min_samples": 10}}, "4", fb_settings)
    assert (name, passed) == ("live sample", False) and "9 shadow-scored" in detail
    checks = live.live_gate_checks({"live": {"min_samples": 9, "max_accuracy_drop": 0.05}}, "4", fb_settings)
    assert [(c[0], c[1]) for c in checks] == [("live sample", True), ("live accuracy", False)]
    assert pd.Timestamp(T0).year == 2026
