"""The lifecycle against a remote MLflow tracking server backed by the real PostgreSQL.

The test starts ``mlflow server`` itself on a free loopback port, with a fresh PostgreSQL database
as backend store and a local folder as the proxied artifact root, then trains nothing new: it
registers copies of the session's tiny triage model through the server, promotes through the gate,
loads the champion the way the service does, and rolls back.
"""

from __future__ import annotations

import json
import shutil

import mlflow

from serving.settings import Settings
from tests.plugins.mlflow_server import tracking_server  # noqa: F401 - the fixture
from training import lifecycle, registry
from training.triage_train import TRIAGE_MODEL_NAME


def _register(settings, model_dir, tmp_path, name) -> str:
    folder = tmp_path / name
    shutil.copytree(model_dir, folder)
    registry.configure(settings)
    with mlflow.start_run(experiment_id=registry.experiment_id("triage", settings)) as run:
        mlflow.log_artifacts(str(folder), "model")
    return registry.register_run_artifact(TRIAGE_MODEL_NAME, run.info.run_id, "model")


def test_promote_load_and_rollback_through_a_tracking_server(tracking_server,  # noqa: F811
                                                                    triage_model_dir, tmp_path):
    import psycopg

    from serving.components import load_triage_classifier

    url, backend_dsn, artifact_root = tracking_server
    settings = Settings(work_dir=tmp_path / "var", mlflow_tracking_uri=url, api_keys={})
    gates = tmp_path / "gates.json"
    gates.write_text(json.dumps({"dataset": "test", "minimums": {"accuracy": 0.0},
                                 "non_inferiority": {"accuracy": 0.02}}))

    v1 = _register(settings, triage_model_dir, tmp_path, "a")
    first = lifecycle.promote("triage", v1, settings=settings, gates_path=gates, actor="ml-eng", reason="first")
    assert first["promoted"], first["gate"].failures()

    # the service's loading path, through the server's proxied artifacts
    clf = load_triage_classifier(f"models:/{TRIAGE_MODEL_NAME}@champion", settings)
    assert clf.version == v1
    assert len(clf.predict(["I have had a bad cough and a fever for three days"])) == 1

    v2 = _register(settings, triage_model_dir, tmp_path, "b")
    second = lifecycle.promote("triage", v2, settings=settings, gates_path=gates, actor="ml-eng", reason="retrain")
    assert second["promoted"] and second["previous"] == v1
    back = lifecycle.rollback("triage", settings=settings, reason="canary errors", actor="oncall")
    assert back["to"] == v1

    # the registry really lives in PostgreSQL and the artifacts under the server's root
    with psycopg.connect(backend_dsn) as conn:
        rows = conn.execute("SELECT version FROM model_versions WHERE name = %s ORDER BY version",
                            (TRIAGE_MODEL_NAME,)).fetchall()
        alias = conn.execute("SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'champion'",
                             (TRIAGE_MODEL_NAME,)).fetchone()
    assert [str(r[0]) for r in rows] == [v1, v2]
    assert str(alias[0]) == v1
    assert any(p.name == "model.int8.onnx" for p in artifact_root.rglob("*.onnx"))
    assert [h["version"] for h in lifecycle.alias_history("triage", settings=settings)] == [v1, v2, v1]
