"""Schema-driven fuzzing of the CDS Hooks endpoints (as tests/serving/test_fuzz_api.py does for the JSON API):
never a 5xx, and every answer as documented (status codes, content types, bodies).

The app is the real one: the real rules-only checker on the built KB, a real SQLite database, an API key (the JWT
path has its own tests in test_cds_hooks.py).  A few real cards are answered first, so feedback can name them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.plugins.db import auth

EXAMPLES = Path(__file__).parent / "cds_hooks_examples"
OPERATIONS = [
    ("/cds-services", "GET"),
    ("/cds-services/{service_id}", "POST"),
    ("/cds-services/{service_id}/feedback", "POST"),
]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, rx_checker):
    from serving.app import create_app
    from serving.settings import Settings
    from tests.plugins.db import API_KEYS

    work = tmp_path_factory.mktemp("cds-fuzz")
    settings = Settings(work_dir=work / "var", api_keys=API_KEYS, database_url=f"sqlite:///{work / 'fuzz.db'}",
                        triage_model_uri=str(work / "no-triage-model"))
    app = create_app(settings, checker=rx_checker)
    case = json.loads((EXAMPLES / "medication_request_corpus.json").read_text())["cases"][0]
    body = {"hook": "order-sign", "hookInstance": "fuzz-seed", "context": {
        "userId": "Practitioner/1", "patientId": "p1", "draftOrders": case["draftOrders"]}, "prefetch": case["prefetch"]}
    with TestClient(app) as client:
        r = client.post("/cds-services/rxtriage-order-sign", json=body, headers=auth("prescriber"))
        assert r.status_code == 200 and r.json()["cards"], r.text
    return app


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_schemathesis_no_server_errors(fuzz_app, path, method):
    import schemathesis
    import schemathesis.checks as checks
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operation = schema[path][method]
    seen: list[int] = []

    @given(case=operation.as_strategy())
    @hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # contract checks on; left out: "schema-valid data is accepted" - the documented body schema is the CDS
        # Hooks envelope, while FHIR validity (R4 resource rules) is checked inside and refused with a 400
        # OperationOutcome, which the API documents
        response = case.call_and_validate(headers=auth("prescriber"),
                                          excluded_checks=[checks.positive_data_acceptance])
        seen.append(response.status_code)
        assert response.status_code < 500

    check()
    assert len(seen) >= (1 if path == "/cds-services" else 10)  # discovery has no input: one case is all there is
