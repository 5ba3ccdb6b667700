"""The OpenAPI document: clean operation ids, a response model and documented error bodies for every
endpoint, and a client generated from it with openapi-python-client that calls every endpoint."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.plugins.db import ROLE_KEYS, auth
from tests.serving.test_reviews_api import FLAGGED

OPERATION_IDS = {
    ("get", "/healthz"): "healthz", ("get", "/readyz"): "readyz", ("get", "/metrics"): "metrics",
    ("post", "/v1/triage"): "triage", ("post", "/v1/triage/batch"): "triage_batch",
    ("post", "/v1/admin/models/reload"): "reload_model",
    ("post", "/v1/prescriptions/check"): "check_prescription",
    ("get", "/v1/reviews"): "list_reviews", ("get", "/v1/reviews/reason-codes"): "list_reason_codes",
    ("get", "/v1/reviews/stats/overrides"): "get_override_stats", ("get", "/v1/reviews/{review_id}"): "get_review",
    ("post", "/v1/reviews/{review_id}/decision"): "decide_review",
    ("get", "/v1/reviews/stats/dashboard"): "get_dashboard",
    ("get", "/v1/admin/alert-tiers"): "get_alert_tiers", ("put", "/v1/admin/alert-tiers"): "put_alert_tiers",
    ("get", "/cds-services"): "cds_discovery", ("post", "/cds-services/{service_id}"): "cds_call",
    ("post", "/cds-services/{service_id}/feedback"): "cds_feedback",
    ("post", "/v1/triage/outcomes"): "record_triage_outcome",
    ("delete", "/v1/triage/outcomes/{request_id}"): "delete_triage_outcome",
}
ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture
def app(review_app, tmp_path):
    return review_app(f"sqlite:///{tmp_path / 'openapi.db'}")


def _operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def test_every_endpoint_has_a_clean_operation_id_and_a_response_model(app):
    spec = app.openapi()
    found = {(m, p): op["operationId"] for m, p, op in _operations(spec)}
    assert found == OPERATION_IDS
    for method, path, op in _operations(spec):
        ok = op["responses"]["200"]["content"]
        schema = next(iter(ok.values()))["schema"]
        assert schema.get("$ref") or schema.get("type") == "string", (method, path, schema)  # never "any"


def test_every_endpoint_documents_its_error_bodies(app):
    spec = app.openapi()
    for method, path, op in _operations(spec):
        responses = op["responses"]
        expected = {"413"}
        if path.startswith("/cds-services"):
            # CDS Hooks: bad input is a 400 OperationOutcome (the spec's error body), never the project's 422
            cds = {"400", "401", "403", "404"} & set(responses)
            assert {"401", "403"} <= cds and ("requestBody" not in op or "400" in cds), (method, path)
            for code in cds:
                ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/OperationOutcome", (method, path, code)
            schema = responses["413"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (method, path, "413", schema)
            continue
        if "requestBody" in op:
            expected |= {"400", "422"}
        if op.get("parameters"):
            expected.add("422")
        if "{review_id}" in path:
            expected.add("404")
        assert expected <= set(responses), (method, path, sorted(responses))
        for code in expected:
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (method, path, code, schema)


# --- a generated client calls every endpoint -------------------------------------------------------------------


def _generator() -> list[str]:
    beside = Path(sys.executable).with_name("openapi-python-client")
    found = str(beside) if beside.exists() else shutil.which("openapi-python-client")
    if not found:
        pytest.fail("openapi-python-client is missing: it is in the test extra (scripts/setup installs it)")
    return [found]


@dataclass
class _Prediction:
    centers: list
    abstained: bool = False
    abstain_reason: str | None = None


class _TinyClassifier:
    """Stands in for the ONNX model (triage is not what this test is about): fixed calibrated ranking."""

    version = "test-1"
    taxonomy_version = None
    labels = ("cardiology", "respiratory")

    def predict(self, texts):
        return [_Prediction([("cardiology", 0.7), ("respiratory", 0.3)]) for _ in texts]


def test_a_generated_client_calls_every_endpoint(app, tmp_path):
    spec_path = tmp_path / "openapi.json"
    spec_path.write_text(json.dumps(app.openapi()))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"post_hooks": [], "package_name_override": "rxt_generated_client"}))
    out = tmp_path / "gen" / "rxt_generated_client"
    run = subprocess.run([*_generator(), "generate", "--path", str(spec_path), "--meta", "none", "--config",
                          str(config), "--output-path", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and (out / "client.py").exists(), run.stdout + run.stderr
    assert "Unable to parse" not in run.stdout + run.stderr, run.stdout + run.stderr
    sys.path.insert(0, str(out.parent))
    try:
        _call_every_endpoint(app)
    finally:
        sys.path.remove(str(out.parent))
        for name in [m for m in sys.modules if m.startswith("rxt_generated_client")]:
            del sys.modules[name]


def _call_every_endpoint(app) -> None:
    gen = importlib.import_module("rxt_generated_client")
    api = importlib.import_module("rxt_generated_client.api")
    models = importlib.import_module("rxt_generated_client.models")
    op = {name: importlib.import_module(f"rxt_generated_client.api.{group}.{name}")
          for group, name in [("health", "healthz"), ("health", "readyz"), ("health", "metrics"),
                              ("triage", "triage"), ("triage", "triage_batch"), ("admin", "reload_model"),
                              ("prescriptions", "check_prescription"), ("reviews", "list_reviews"),
                              ("reviews", "list_reason_codes"), ("reviews", "get_override_stats"),
                              ("reviews", "get_review"), ("reviews", "decide_review"),
                              ("triage", "record_triage_outcome"), ("triage", "delete_triage_outcome")]}
    assert api is not None
    with TestClient(app) as http:
        app.state.rxt.triage.holder._model = _TinyClassifier()

        def client(who: str | None = None):
            c = gen.AuthenticatedClient(base_url="http://testserver", token=ROLE_KEYS[who]) if who else \
                gen.Client(base_url="http://testserver")
            http.headers.clear()
            if who:
                http.headers.update(auth(who))
            return c.set_httpx_client(http)

        called = {}

        def check(name, response, model):
            assert response.status_code == 200, (name, response.status_code, response.content[:500])
            assert isinstance(response.parsed, model), (name, type(response.parsed))
            called[name] = response.parsed

        check("healthz", op["healthz"].sync_detailed(client=client()), models.HealthResponse)
        r = op["readyz"].sync_detailed(client=client())
        assert r.status_code in (200, 503) and isinstance(r.parsed, models.ReadinessResponse)
        called["readyz"] = r.parsed
        r = op["metrics"].sync_detailed(client=client())
        assert r.status_code == 200 and b"rxt_http_requests_total" in r.content
        called["metrics"] = r

        check("triage", op["triage"].sync_detailed(
            client=client("chat"), body=models.TriageRequest(text="crushing chest pain and sweating", age=58.0),
            k=2), models.TriageResponse)
        assert called["triage"].urgency.value == "emergency" and called["triage"].centers[0].id == "emergency"
        check("triage_batch", op["triage_batch"].sync_detailed(
            client=client("chat"), body=models.TriageBatchRequest(items=[models.TriageRequest(text="dry cough")])),
            models.TriageBatchResponse)
        check("record_triage_outcome", op["record_triage_outcome"].sync_detailed(
            client=client("clinician"), body=models.OutcomeRequest(request_id=called["triage"].request_id,
                                                                   actual_center="cardiology")),
            models.OutcomeResponse)
        assert called["record_triage_outcome"].created is True
        check("delete_triage_outcome", op["delete_triage_outcome"].sync_detailed(
            called["triage"].request_id, client=client("clinician")), models.OutcomeDeleted)
        assert called["delete_triage_outcome"].outcome_deleted is True
        check("reload_model", op["reload_model"].sync_detailed(client=client("admin")), models.ReloadResponse)

        rx = models.Prescription.from_dict(FLAGGED)
        check("check_prescription", op["check_prescription"].sync_detailed(
            client=client("prescriber"), body=rx, idempotency_key="gen-client-1"), models.CheckResponse)
        rid = called["check_prescription"].review_id
        assert called["check_prescription"].queued and isinstance(rid, int)
        check("list_reviews", op["list_reviews"].sync_detailed(client=client("pharmacist")), models.ReviewPage)
        assert [i.id for i in called["list_reviews"].items] == [rid]
        check("get_review", op["get_review"].sync_detailed(rid, client=client("pharmacist")), models.ReviewDetail)
        assert called["get_review"].findings[0].severity.value == "major"
        check("list_reason_codes", op["list_reason_codes"].sync_detailed(client=client("pharmacist")),
              models.ReasonCodesResponse)
        check("decide_review", op["decide_review"].sync_detailed(
            rid, client=client("pharmacist"),
            body=models.DecisionIn(decision=models.DecisionInDecision("reject"), reason_code="unsafe_interaction")),
            models.DecisionResponse)
        assert called["decide_review"].status.value == "rejected"
        check("get_override_stats", op["get_override_stats"].sync_detailed(client=client("admin")),
              models.OverrideStatsResponse)
        assert called["get_override_stats"].total.decided == 1
        # errors parse into the documented body too
        missing = op["get_review"].sync_detailed(99999, client=client("pharmacist"))
        assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorResponse)
        assert set(called) == set(op), set(op) - set(called)
