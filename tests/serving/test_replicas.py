"""Two service replicas on one PostgreSQL database and one MLflow tracking server, all real processes.

The test starts its own ``mlflow server`` (PostgreSQL backend, proxied artifacts), registers two versions of the
session's small DDI model and points ``champion`` at the first, then starts two ``python -m serving`` processes
on free ports with the same database (a fresh schema), tracking URI, API keys and session secret, and a model
poll interval of a few seconds.  It checks that

- a review queued through one replica is visible on the other, and a decision on one makes the same decision
  on the other a 409;
- an alias promotion reaches both replicas through their pollers (measured, printed);
- the audit chain stays valid while both replicas and a promotion write to it concurrently, with no entry lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from mlflow import MlflowClient
from sqlalchemy import func, select

from serving import audit
from serving.db import Database
from serving.db.models import AuditEntryRow
from serving.settings import PROJECT_ROOT, Settings
from tests.plugins.db import API_KEYS, auth
from tests.plugins.mlflow_server import free_port, tracking_server  # noqa: F401 - the fixture
from tests.plugins.registry_support import register_copy
from training import registry

POLL_SECONDS = 3.0
START_TIMEOUT_S = 300  # a replica loads the KB and the model; the shared 2-core machine is often loaded
FLAGGED = {"patient": {"age_years": 58, "sex": "female", "weight_kg": 70},
           "items": [{"drug": "warfarin", "dose": 5, "unit": "mg", "route": "oral", "frequency": "daily"},
                     {"drug": "aspirin", "dose": 75, "unit": "mg", "route": "oral", "frequency": "daily"}]}
CLEAN = {"patient": {"age_years": 40, "sex": "male", "weight_kg": 80},
         "items": [{"sig": "Amoxicillin 500 mg PO TID x 7 days"}]}


def _ddi_detail(client: httpx.Client) -> str:
    body = client.get("/readyz").json()
    return body["components"]["ddi_model"]["detail"]


def _start(name: str, port: int, env: dict, tmp_path) -> tuple[subprocess.Popen, object]:
    log = (tmp_path / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"],
                            cwd=PROJECT_ROOT, env={**env, "RXT_WORK_DIR": str(tmp_path / name)},
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _wait_ready(proc, client: httpx.Client, log_path, want: str) -> None:
    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited ({proc.returncode}): {log_path.read_text()[-3000:]}")
        try:
            body = client.get("/readyz", headers=auth("admin")).json()
            parts = body["components"]
            if parts["database"]["ok"] and parts["kb"]["ok"] and want in parts["ddi_model"]["detail"]:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(1)
    raise RuntimeError(f"replica not ready in {START_TIMEOUT_S} s: {log_path.read_text()[-3000:]}")


@pytest.mark.slow
def test_two_replicas_share_reviews_promotions_and_one_audit_chain(
        tracking_server, pg_schema_url, ddi_model_dir, rx_checker, rx_checker_settings, tmp_path):  # noqa: F811
    url, _, _ = tracking_server
    ml = Settings(work_dir=tmp_path / "ml", mlflow_tracking_uri=url, database_url=pg_schema_url, api_keys={})
    v1 = register_copy(ml, ddi_model_dir, tmp_path / "v1", "ddi-severity")
    v2 = register_copy(ml, ddi_model_dir, tmp_path / "v2", "ddi-severity")
    # the first champion is set without an audit entry, so that the review schema is still empty when both
    # replicas start at the same moment: their migrations must not race
    MlflowClient().set_registered_model_alias("ddi-severity", "champion", v1)

    env = {k: v for k, v in os.environ.items() if not k.startswith("RXT_")}
    env.update({
        "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "RXT_DATABASE_URL": pg_schema_url, "RXT_MLFLOW_TRACKING_URI": url,
        "RXT_KB_PATH": str(rx_checker_settings.resolved_kb_path()),
        "RXT_DDI_MODEL_URI": "models:/ddi-severity@champion",
        "RXT_TRIAGE_MODEL_URI": str(tmp_path / "no-triage-model"),  # triage is not under test
        "RXT_MODEL_POLL_SECONDS": str(POLL_SECONDS),
        "RXT_API_KEYS": json.dumps(API_KEYS), "RXT_SESSION_SECRET": "replica-test-shared-secret-0123456789",
    })
    ports = {"a": free_port(), "b": free_port()}
    procs = {}
    try:
        for name, port in ports.items():  # both start at once: the migrations must not race either
            procs[name] = _start(name, port, env, tmp_path)
        clients = {name: httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
                   for name, port in ports.items()}
        for name, client in clients.items():
            _wait_ready(procs[name][0], client, tmp_path / f"{name}.log", f"ddi-severity {v1}")
        a, b = clients["a"], clients["b"]

        # a review queued on A is visible on B; decided on A, deciding it on B is a conflict
        r = a.post("/v1/prescriptions/check", json={**FLAGGED, "id": "rx-replica-1"}, headers=auth("prescriber"))
        assert r.status_code == 200, r.text
        review_id = r.json()["review_id"]
        assert r.json()["queued"] and r.json()["model_version"] == v1
        seen = b.get(f"/v1/reviews/{review_id}", headers=auth("pharmacist"))
        assert seen.status_code == 200 and seen.json()["status"] == "pending"
        decision = {"decision": "reject", "reason_code": "unsafe_interaction"}
        first = a.post(f"/v1/reviews/{review_id}/decision", json=decision, headers=auth("pharmacist"))
        assert first.status_code == 200, first.text
        second = b.post(f"/v1/reviews/{review_id}/decision", json=decision, headers=auth("pharmacist2"))
        assert second.status_code == 409, second.text
        assert "already decided" in second.json()["detail"]
        assert b.get(f"/v1/reviews/{review_id}", headers=auth("pharmacist")).json()["status"] == "rejected"

        # both replicas and a promotion write to the audit chain at the same time
        db = Database(pg_schema_url)
        with db.session() as session:
            before = session.scalar(select(func.count(AuditEntryRow.id)))

        def check(i: int) -> int:
            client = a if i % 2 else b
            rx = {**(FLAGGED if i % 3 else CLEAN), "id": f"rx-concurrent-{i}"}
            resp = client.post("/v1/prescriptions/check", json=rx, headers=auth("prescriber"))
            assert resp.status_code == 200, resp.text
            return resp.json()["audit_id"]

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(check, i) for i in range(60)]
            promoted_at = time.time()
            registry.set_alias("ddi-severity", "champion", v2, actor="ml-eng", reason="retrained", settings=ml)
            audit_ids = [f.result() for f in futures]
        assert len(set(audit_ids)) == 60

        # the promotion reaches both replicas through their pollers
        reached: dict[str, float] = {}
        deadline = promoted_at + POLL_SECONDS + 120  # one poll interval + loading the new version on a busy host
        while len(reached) < 2 and time.time() < deadline:
            for name, client in clients.items():
                if name not in reached and f"ddi-severity {v2}" in _ddi_detail(client):
                    reached[name] = time.time() - promoted_at
            time.sleep(0.2)
        print(f"promotion of ddi-severity {v2} reached the replicas after "
              + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(reached.items()))
              + f" (poll interval {POLL_SECONDS} s)")
        assert set(reached) == {"a", "b"}, f"not every replica serves version {v2}: {reached}"
        for client in (a, b):
            body = client.post("/v1/prescriptions/check", json={**FLAGGED, "id": "rx-after"},
                               headers=auth("prescriber")).json()
            assert body["model_version"] == v2

        with db.session() as session:
            result = audit.verify_chain(session)
            assert result.ok, str(result)
            after = session.scalar(select(func.count(AuditEntryRow.id)))
            assert after == before + 60 + 1 + 2  # 60 checks, the promotion, the two checks after it
            assert audit.verify_reviews(session).ok
            promotions = audit.history(session, subject="model:ddi-severity@champion")
            assert [(e.before["version"], e.after["version"]) for e in promotions] == [(v1, v2)]
        db.dispose()
        for client in clients.values():
            client.close()
    finally:
        for proc, log in procs.values():
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
