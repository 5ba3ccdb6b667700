"""The ML engineer's weekly loop end to end (issue 15), on the session's small triage model, against the real
PostgreSQL (a fresh schema) and a real MLflow store:

triage (with consent) -> outcomes -> ``snapshot feedback`` -> retrain (small) with the snapshot merged in, logged as
an MLflow dataset input -> the new version as ``@challenger`` scored in shadow (answers unchanged) -> outcomes for
the shadow-scored requests -> ``compare triage --live`` -> promotion with a live-sample gate (refused below the
sample, accepted at it) -> rollback.

And the monitor on synthetic shifts: a day of English complaints, then a day of the same kind of complaints in
another language, then a day in another register (clinician-style shorthand); only the last two are flagged.
"""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.plugins.db import auth
from tests.plugins.registry_support import register_copy
from tests.plugins.triage_model import FIXTURE_OPTIONS
from training import feedback_data, lifecycle, registry
from training.triage_train import TRIAGE_MODEL_NAME, train_triage

N_PHASE = 40


def _complaints(triage_registry) -> pd.DataFrame:
    """Held-out complaints of the fixture's own run (public sources) with their true center."""
    settings, _ = triage_registry
    split = pd.read_csv(settings.work_dir / "run" / "report" / "split.csv")
    rows = split[(split["split"].isin(["test", "val"])) & (split["origin"] == "external")]
    return rows.sample(frac=1.0, random_state=3).reset_index(drop=True)


def _triage_all(client, rows: pd.DataFrame) -> list[dict]:
    answers = []
    for text in rows["text"]:
        r = client.post("/v1/triage", json={"text": text, "feedback_consent": True}, headers=auth("chat"))
        assert r.status_code == 200, r.text
        answers.append(r.json())
    return answers


def _outcomes(client, answers, rows) -> None:
    for answer, center in zip(answers, rows["center"]):
        r = client.post("/v1/triage/outcomes", json={"request_id": answer["request_id"], "actual_center": center},
                        headers=auth("clinician"))
        assert r.status_code == 200, r.text


def _cli(argv, settings) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = lifecycle.main(argv, settings=settings)
    return code, out.getvalue()


def test_outcome_snapshot_retrain_shadow_compare_promote_rollback(triage_registry, triage_model_dir, pg_schema_url,
                                                                    tmp_path):
    from serving.app import create_app
    from serving.settings import Settings
    from tests.plugins.db import API_KEYS

    settings = Settings(work_dir=tmp_path / "var", api_keys=API_KEYS, database_url=pg_schema_url,
                        feedback_keep_text=True)
    v1 = register_copy(settings, triage_model_dir, tmp_path / "v1", TRIAGE_MODEL_NAME)
    registry.set_alias(TRIAGE_MODEL_NAME, "champion", v1, actor="setup", reason="first model", settings=settings)
    rows = _complaints(triage_registry)
    phase1, phase2 = rows.iloc[:N_PHASE], rows.iloc[N_PHASE:2 * N_PHASE]
    assert len(phase2) == N_PHASE

    # 1. live traffic with consent, then outcomes
    with TestClient(create_app(settings)) as client:
        answers = _triage_all(client, phase1)
        _outcomes(client, answers, phase1)
        first_answers = {a["request_id"]: a for a in answers}

    # 2. snapshot: every answer with its outcome and (consented, enabled) text
    manifest = feedback_data.snapshot("feedback", settings, out=tmp_path / "snapshots")
    assert manifest["rows"] == N_PHASE and manifest["rows_with_text"] == N_PHASE
    frame, loaded = feedback_data.load_snapshot(manifest["path"])
    assert loaded["sha256"] == manifest["sha256"] and set(frame["request_id"]) == set(first_answers)

    # 3. retrain (small: one epoch on 5 texts per center -- the loop's plumbing is under test, not the model's
    # quality; the gates below ask for none) with the snapshot merged in; the new version becomes the challenger
    result = train_triage(settings, output_dir=tmp_path / "retrain",
                          **{**FIXTURE_OPTIONS, "epochs": 1, "limit_per_center": 5, "alias": "challenger",
                             "feedback": manifest["path"]})
    v2 = result.version
    assert v2 is not None and v2 != v1
    assert result.metrics["details"]["feedback"]["n_train"] + result.metrics["details"]["feedback"]["n_time_test"] \
        == N_PHASE
    assert "feedback_time_test_accuracy" in result.metrics
    from mlflow import MlflowClient

    inputs = MlflowClient().get_run(result.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == [manifest["version"]]
    assert inputs[0].dataset.digest == manifest["sha256"][:16]

    # 4. the challenger in shadow on every request: answers are the champion's, unchanged
    shadow_settings = settings.model_copy(update={"shadow_fraction": 1.0})
    with TestClient(create_app(shadow_settings)) as client:
        service = client.app.state.rxt.triage
        assert service.shadow.holder.version == v2
        again = _triage_all(client, phase1)
        for before, after in zip(answers, again):
            assert {k: before[k] for k in ("centers", "urgency", "model_version")} == \
                   {k: after[k] for k in ("centers", "urgency", "model_version")}
        answers2 = _triage_all(client, phase2)
        assert service.shadow.wait_idle(600) and service.feedback.wait_idle(60)
        _outcomes(client, answers2, phase2)
        metrics = client.get("/metrics").text
        assert f'rxt_shadow_challenger_info{{version="{v2}"}} 1.0' in metrics
        assert f"rxt_shadow_scored_total {2 * N_PHASE}.0" in metrics

    # 5. compare --live: both models' accuracy on the same requests with an outcome
    code, out = _cli(["compare", "triage", "--live"], settings)
    assert code == 0, out
    live = json.loads(out)
    stats = live["challengers"][v2]
    assert stats["scored"] == 2 * N_PHASE and stats["with_outcome"] == N_PHASE
    assert 0 <= stats["agreement"] <= 1 and stats["champion_accuracy"] is not None
    assert [p["champion_version"] for p in live["pairs"]] == [str(v1)]

    # 6. promotion gated on a live sample: refused below it, accepted at it; then rollback
    gates = tmp_path / "gates.json"
    base = {"dataset": "test", "minimums": {"accuracy": 0.0}, "maximums": {"ece": 1.0},
            "non_inferiority": {"accuracy": 1.0}}
    gates.write_text(json.dumps({**base, "live": {"min_samples": N_PHASE + 1}}))
    refused = lifecycle.promote("triage", v2, settings=settings, gates_path=gates, actor="mle")
    assert refused["promoted"] is False
    assert [c.name for c in refused["gate"].failures()] == ["live sample"]
    gates.write_text(json.dumps({**base, "live": {"min_samples": N_PHASE, "max_accuracy_drop": 1.0}}))
    ok = lifecycle.promote("triage", v2, settings=settings, gates_path=gates, actor="mle", reason="weekly retrain")
    assert ok["promoted"] is True, ok["gate"].failures()
    assert {c.name for c in ok["gate"].checks} >= {"live sample", "live accuracy"}
    assert registry.get_alias_version(TRIAGE_MODEL_NAME, "champion") == v2
    back = lifecycle.rollback("triage", settings=settings, reason="loop test", actor="mle")
    assert back["to"] == str(v1) and registry.get_alias_version(TRIAGE_MODEL_NAME, "champion") == str(v1)


# --- drift on a synthetic shift ----------------------------------------------------------------------------------

def test_monitor_flags_another_language_and_another_register(triage_registry, triage_model_dir, tmp_path):
    from serving.db import Database
    from serving.feedback import REFERENCE_FILE, make_record, write
    from serving.settings import Settings
    from serving.triage_service import TriageOutcome
    from training import monitor
    from triage.classifier import TriageClassifier
    from triage.taxonomy import load_taxonomy

    settings = Settings(work_dir=tmp_path / "var")
    db = Database(settings.resolved_database_url())
    clf = TriageClassifier.from_folder(triage_model_dir, intra_op_threads=1)
    english = list(_complaints(triage_registry)["text"][:80])
    # the shifted batch: complaints in Chinese naming the center's Chinese name (another language and script:
    # synthetic monitoring input, not clinical content)
    names = [c.name_zh for c in load_taxonomy().centers if c.routable]
    chinese = [f"我想看{names[i % len(names)]}，已经不舒服{i % 5 + 2}天了，晚上更严重" for i in range(80)]
    # and a shift of register in English: clinician-style shorthand instead of patients' sentences (synthetic
    # monitoring input, not clinical content)
    symptoms = ["SOB", "cough", "rash", "HA", "abdo pain", "LBP", "dysuria", "knee pain", "sore throat", "fever",
                "vomiting", "diarrhoea", "palpitations", "dizziness", "ear pain", "eye redness"]
    shorthand = [f"pt c/o {symptoms[i % len(symptoms)]} x{i % 6 + 1}/7, nil PMH, NKDA, obs NAD" for i in range(80)]
    day1 = datetime(2026, 12, 1, 9, tzinfo=UTC)
    records = []
    for day, texts in ((day1, english), (day1 + timedelta(days=1), chinese), (day1 + timedelta(days=2), shorthand)):
        for i, (text, pred) in enumerate(zip(texts, clf.predict(texts))):
            outcome = TriageOutcome(centers=pred.centers, abstained=pred.abstained, abstain_reason=None, flags=[],
                                    urgency="routine", urgency_reasons=[], model_version="1", taxonomy_version="1",
                                    embedding=pred.embedding)
            records.append(make_record(settings, f"{day:%d}-{i}", text, None, None, outcome,
                                       {"centers": [{"id": pred.centers[0][0]}]}, now=day + timedelta(minutes=i)))
    with db.session() as s:
        write(s, records)
    db.dispose()

    report = monitor.monitor(settings, "2026-12-01", "2026-12-04", window="1D",
                             reference=triage_model_dir / REFERENCE_FILE)
    first, second, third = report["windows"]
    assert (first["n"], second["n"], third["n"]) == (80, 80, 80)
    assert not {"embedding", "nonlatin_share"} & set(first["flagged"]), first["drift"]
    assert {"embedding", "nonlatin_share"} <= set(second["flagged"]), second["drift"]
    # the register shift: same language and script, so only the embedding and the text statistics can see it
    assert "embedding" in third["flagged"] and "nonlatin_share" not in third["flagged"], third["drift"]
    flagged_first = {k: v for k, v in first["drift"].items() if v.get("drift")}
    # the English day raises nothing
    assert report["flagged_windows"] == [second["start"], third["start"]], flagged_first
    assert "embedding" in monitor.markdown(report)
