"""CDS Hooks over FHIR R4 against the real app: the specification's published examples, a MedicationRequest corpus
covering every finding category, discovery -> hook -> feedback -> override statistics and audit chain, the EHR's JWT
(signature, iss allow-list, aud, exp, jti replay), bad input as 400 OperationOutcomes, and every card validated
against a JSON Schema written from the specification (tests/serving/cds_hooks_examples/, sources in its README).

Real prescription checker (KB built from the real tables), real SQLite and PostgreSQL, real ES384/RS384 keys.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import date
from pathlib import Path

import jsonschema
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from serving import audit, cds_hooks
from serving.fhir_mapping import MappingError, clean_drug_text, map_hook
from tests.plugins.db import auth

EXAMPLES = Path(__file__).parent / "cds_hooks_examples"
CARD_SCHEMA = json.loads((EXAMPLES / "card.schema.json").read_text())
CARD_VALIDATOR = jsonschema.Draft202012Validator(CARD_SCHEMA, format_checker=jsonschema.FormatChecker())
ISS = "https://ehr.example.org"
BASE = "http://testserver"
SELECT = "rxtriage-order-select"
SIGN = "rxtriage-order-sign"
# the Patient of the specification's "Calling a CDS Service" example
SPEC_PATIENT = {"resourceType": "Patient", "gender": "male", "birthDate": "1925-12-23", "id": "1288992",
                "active": True}


def load(name: str):
    return json.loads((EXAMPLES / name).read_text())


def assert_cards_valid(cards: list[dict]) -> None:
    for card in cards:
        errors = sorted(CARD_VALIDATOR.iter_errors(card), key=str)
        assert not errors, f"card {card.get('summary')!r} breaks the card schema: {errors[0].message}"
        assert len(card["summary"]) < 140


# --- keys and tokens -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ehr_keys(tmp_path_factory):
    """An ES384 and an RS384 key pair of the EHR; the public halves in a JWK Set file."""
    ec_key = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {"keys": [
        {**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec-1", "alg": "ES384", "use": "sig"},
        {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1", "alg": "RS384", "use": "sig"},
    ]}
    path = tmp_path_factory.mktemp("jwks") / "ehr-jwks.json"
    path.write_text(json.dumps(jwks))
    return {"ec": ec_key, "rsa": rsa_key, "jwks_path": path}


def token(keys, path: str, *, alg="ES384", kid="ec-1", iss=ISS, aud=None, exp_in=300, jti=None, key=None,
          headers=None, **claims) -> str:
    now = int(time.time())
    payload = {"iss": iss, "aud": aud or f"{BASE}{path}", "iat": now, "exp": now + exp_in,
               "jti": jti or str(uuid.uuid4()), **claims}
    signing = key or (keys["ec"] if alg.startswith("ES") else keys["rsa"])
    return jwt.encode(payload, signing, algorithm=alg, headers={"kid": kid, **(headers or {})})


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture
def cds_app(review_app, ehr_keys):
    def make(database_url=None, **overrides):
        overrides.setdefault("cds_issuers", {ISS: str(ehr_keys["jwks_path"])})
        return review_app(database_url, **overrides)
    return make


@pytest.fixture
def client(cds_app, tmp_path):
    with TestClient(cds_app(f"sqlite:///{tmp_path / 'cds.db'}")) as c:
        yield c


def hook_body(hook: str, context: dict, prefetch: dict | None = None, instance: str | None = None) -> dict:
    body = {"hook": hook, "hookInstance": instance or str(uuid.uuid4()), "fhirServer": "https://ehr.example.org/fhir",
            "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def call(client, service_id, body, headers=None):
    return client.post(f"/cds-services/{service_id}", json=body, headers=headers or auth("prescriber"))


def corpus_case(category: str) -> dict:
    return next(c for c in load("medication_request_corpus.json")["cases"] if c["category"] == category)


def corpus_body(category: str, hook="order-sign") -> dict:
    case = corpus_case(category)
    return hook_body(hook, {"userId": "Practitioner/1", "patientId": "p1", "draftOrders": case["draftOrders"]},
                     copy.deepcopy(case["prefetch"]))


# --- the specification's examples --------------------------------------------------------------------------


def test_discovery_answers_both_services_with_prefetch_templates(client, ehr_keys):
    r = client.get("/cds-services", headers=bearer(token(ehr_keys, "/cds-services")))
    assert r.status_code == 200, r.text
    services = {s["id"]: s for s in r.json()["services"]}
    assert {s["hook"] for s in services.values()} == {"order-select", "order-sign"}
    for s in services.values():
        assert s["description"] and s["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert set(s["prefetch"]) == {"patient", "medications", "allergies", "conditions", "weight", "renal",
                                      "pregnancy"}
        assert "status=active" in s["prefetch"]["medications"] and "29463-7" in s["prefetch"]["weight"]
        assert "33914-3" in s["prefetch"]["renal"] and "2164-2" in s["prefetch"]["renal"]
        assert "82810-3" in s["prefetch"]["pregnancy"]
    # the specification's discovery example has the same shape (services: hook, id, description, prefetch)
    spec = load("discovery-example.json")
    assert all({"hook", "id", "description"} <= set(s) for s in spec["services"])


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_published_example_requests_are_answered(client, hook):
    """The R4 examples of cds-hooks/docs, sent as published (they carry the R4 deviations we tolerate)."""
    context = load(f"{hook}-r4.json")["context"]
    service_id = SELECT if hook == "order-select" else SIGN
    r = call(client, service_id, hook_body(hook, context, {"patient": SPEC_PATIENT}))
    assert r.status_code == 200, r.text
    cards = r.json()["cards"]
    assert_cards_valid(cards)
    rules = [c["detail"].split("`")[1] for c in cards]
    # amoxicillin / clavulanate (RxNorm 617993, read by its display) is recognised: no unmapped-medication card
    assert "CDS-MEDICATION-UNMAPPED" not in rules and not any(r.startswith("DRUG-") for r in rules)
    # what the example does not send is said, not passed over
    assert {"CDS-ALLERGIES-MISSING", "CDS-MEDICATIONS-MISSING"} <= set(rules)
    mapped = map_hook(context, {"patient": SPEC_PATIENT}, client.app.state.rxt.checker.require().kb, hook=hook)
    (order,) = mapped.orders  # the NutritionOrder is not a prescription
    item = mapped.prescription.items[0]
    assert order.resource_id == "MedicationRequest/smart-MedicationRequest-103"
    assert (item.dose, item.unit, item.strength_mg_per_ml, item.frequency) == (5, "mL", 120, "2 times a day")
    assert item.duration_days == 10
    assert mapped.prescription.patient.sex == "male" and mapped.prescription.patient.age_years > 100


def test_published_response_example_fits_the_card_schema():
    """The schema accepts the specification's own example cards once they carry what rxtriage adds (uuid, Coding
    display): a check of the schema itself."""
    cards = load("response-example.json")["cards"]
    cards[1]["uuid"] = str(uuid.uuid4())
    assert_cards_valid(cards)


def test_published_example_jwt(client, cds_app, tmp_path):
    """The specification's example JWT verifies against its published JWK Set (ES384), and the service refuses it:
    it names a jku that is not configured, and it expired in 2015."""
    spec = load("jwt.json")
    jwks = jwt.PyJWKSet.from_dict(load("jwks-public.json"))
    claims = jwt.decode(spec["token"], jwks["example-kid"].key, algorithms=["ES384"],
                        audience=spec["payload"]["aud"], options={"verify_exp": False})
    assert claims == spec["payload"]
    r = client.get("/cds-services", headers=bearer(spec["token"]))
    assert r.status_code == 401 and "not trusted" in r.json()["detail"]
    jwks_file = tmp_path / "spec-jwks.json"
    jwks_file.write_text(json.dumps(load("jwks-public.json")))
    app = cds_app(f"sqlite:///{tmp_path / 'spec.db'}", cds_issuers={spec["payload"]["iss"]: str(jwks_file)},
                  cds_base_url="https://cds.example.org")
    with TestClient(app) as c:
        r = c.get("/cds-services", headers=bearer(spec["token"]))
        assert r.status_code == 401 and "jku" in r.json()["detail"]
    app = cds_app(f"sqlite:///{tmp_path / 'spec2.db'}",
                  cds_issuers={spec["payload"]["iss"]: "https://fhir-ehr.example.com/jwk_uri"},
                  cds_base_url="https://cds.example.org")
    from serving.cds_auth import KeySets

    # the URL is configured (so the jku matches); the key set itself comes from the published file, not the network

    class FileBacked(KeySets):
        def key(self, iss, kid):
            return jwks[kid].key

    app.state.rxt_cds_keys = FileBacked(app.state.rxt.settings)
    with TestClient(app) as c:
        r = c.get("/cds-services", headers=bearer(spec["token"]))
        assert r.status_code == 401 and r.json()["detail"] == "JWT has expired"
        assert r.json()["resourceType"] == "OperationOutcome"


# --- every finding category through a CDS Hooks call ---------------------------------------------------------

CATEGORIES = ["interaction", "duplicate", "allergy", "dose", "pregnancy", "age", "renal", "hepatic",
              "contraindication"]


@pytest.mark.parametrize("category", CATEGORIES)
def test_corpus_reaches_every_finding_category(client, category):
    case = corpus_case(category)
    r = call(client, SIGN, corpus_body(category))
    assert r.status_code == 200, r.text
    cards = r.json()["cards"]
    assert_cards_valid(cards)
    hits = [c for c in cards if c["source"]["topic"]["code"] == category]
    assert any(f"`{case['expected_rule_id']}`" in c["detail"] for c in hits), [c["summary"] for c in cards]
    for c in hits:
        sev = c["detail"].split("**")[1]
        assert c["indicator"] == cds_hooks.INDICATOR[sev]
        if sev != "info":
            assert {o["code"] for o in c["overrideReasons"]} >= {"clinically_appropriate", "monitoring_in_place"}
            assert all(o["system"] == cds_hooks.OVERRIDE_REASON_SYSTEM and o["display"] for o in c["overrideReasons"])


def test_suggestions_remove_the_order_or_set_the_dose_to_the_limit(client):
    cards = call(client, SIGN, corpus_body("dose")).json()["cards"]
    daily = next(c for c in cards if "`DOSE-MAX-DAILY`" in c["detail"])
    assert daily["selectionBehavior"] == "at-most-one"
    update, delete = daily["suggestions"]
    (action,) = update["actions"]
    assert action["type"] == "update" and action["resource"]["id"] == "a"
    dose = action["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert dose == {"value": 800.0, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}  # 3200/4
    assert delete["actions"] == [{"type": "delete", "description": delete["actions"][0]["description"],
                                  "resourceId": "MedicationRequest/a"}]
    single = next(c for c in cards if "`DOSE-MAX-SINGLE`" in c["detail"])
    assert single["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"][0]["doseAndRate"][0][
        "doseQuantity"]["value"] == 800.0
    inter = next(c for c in call(client, SIGN, corpus_body("interaction")).json()["cards"]
                 if c["source"]["topic"]["code"] == "interaction")
    assert sorted(a["resourceId"] for s in inter["suggestions"] for a in s["actions"]) == \
        ["MedicationRequest/a", "MedicationRequest/b"]


# --- discovery -> hook -> feedback -> statistics, on SQLite and PostgreSQL -------------------------------------


def test_round_trip_feedback_lands_in_audit_log_and_override_statistics(cds_app, ehr_keys, db_url):
    with TestClient(cds_app(db_url)) as c:
        assert c.get("/cds-services", headers=bearer(token(ehr_keys, "/cds-services"))).status_code == 200
        path = f"/cds-services/{SIGN}"
        cards = c.post(path, json=corpus_body("dose"), headers=bearer(token(ehr_keys, path, alg="RS384",
                                                                            kid="rsa-1"))).json()["cards"]
        assert_cards_valid(cards)
        daily = next(x for x in cards if "`DOSE-MAX-DAILY`" in x["detail"])
        single = next(x for x in cards if "`DOSE-MAX-SINGLE`" in x["detail"])
        fb_path = f"{path}/feedback"
        feedback = {"feedback": [
            {"card": daily["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-12-07T10:05:31Z",
             "overrideReason": {"reason": {"system": cds_hooks.OVERRIDE_REASON_SYSTEM,
                                           "code": "dose_confirmed_with_prescriber"},
                                "userComment": "loading dose, confirmed"}},
            {"card": single["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-12-07T10:05:32Z",
             "acceptedSuggestions": [{"id": single["suggestions"][0]["uuid"]}]},
        ]}
        r = c.post(fb_path, json=feedback, headers=bearer(token(ehr_keys, fb_path)))
        assert r.status_code == 200, r.text
        assert (r.json()["stored"], r.json()["duplicates"]) == (2, 0)
        # the same feedback again (the spec allows repeats): stored once
        again = c.post(fb_path, json=feedback, headers=bearer(token(ehr_keys, fb_path)))
        assert (again.json()["stored"], again.json()["duplicates"]) == (0, 2)

        stats = c.get("/v1/reviews/stats/overrides", headers=auth("pharmacist")).json()
        rules = {r["rule_id"]: r for r in stats["rules"]}
        assert (rules["DOSE-MAX-DAILY"]["ehr_feedback"], rules["DOSE-MAX-DAILY"]["ehr_overridden"]) == (1, 1)
        assert rules["DOSE-MAX-DAILY"]["ehr_override_rate"] == 1.0
        assert (rules["DOSE-MAX-SINGLE"]["ehr_accepted"], rules["DOSE-MAX-SINGLE"]["ehr_overridden"]) == (1, 0)
        assert stats["total"]["ehr_feedback"] == 2 and stats["total"]["ehr_overridden"] == 1

        db = c.app.state.rxt.db
        with db.session() as s:
            assert audit.verify_chain(s).ok
            hooks = audit.history(s, action="cds.hook")
            fbs = audit.history(s, action="cds.feedback")
        assert len(hooks) == 1 and set(hooks[0].after["cards"]) == {x["uuid"] for x in cards}
        assert hooks[0].actor == f"cds:{ISS}" and "DOSE-MAX-DAILY" in hooks[0].after["rule_ids"]
        assert "patient" not in json.dumps(hooks[0].after).lower()  # no patient data in the hook entry
        by_card = {e.subject: e.after for e in fbs}
        assert by_card[f"cds-card:{daily['uuid']}"]["override_reason"]["code"] == "dose_confirmed_with_prescriber"
        assert by_card[f"cds-card:{daily['uuid']}"]["rule_id"] == "DOSE-MAX-DAILY"
        assert by_card[f"cds-card:{single['uuid']}"]["accepted_suggestions"] == [single["suggestions"][0]["uuid"]]


def test_feedback_examples_of_the_specification_and_bad_feedback(client):
    """The spec's three feedback examples name cards this service never answered: 404 naming the card; a card of
    ours with the same shapes is accepted; wrong suggestions, outcomes, reasons and services are 400s."""
    for example in load("feedback.json"):
        r = client.post(f"/cds-services/{SIGN}/feedback", json=example, headers=auth("prescriber"))
        assert r.status_code == 404 and r.json()["issue"][0]["expression"] == ["feedback[0].card"]
    cards = call(client, SIGN, corpus_body("allergy")).json()["cards"]
    card = next(c for c in cards if c.get("suggestions"))
    for example in load("feedback.json"):
        example = copy.deepcopy(example)
        example["feedback"][0]["card"] = card["uuid"]
        if example["feedback"][0].get("acceptedSuggestions"):
            example["feedback"][0]["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
        r = client.post(f"/cds-services/{SIGN}/feedback", json=example, headers=auth("prescriber"))
        assert r.status_code == 200, r.text
    bad = [
        ({"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-12-07T10:00:00Z",
          "acceptedSuggestions": [{"id": str(uuid.uuid4())}]}, "feedback[0].acceptedSuggestions[0].id"),
        ({"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-12-07T10:00:00Z"},
         "feedback[0].acceptedSuggestions"),
        ({"card": card["uuid"], "outcome": "ignored", "outcomeTimestamp": "2026-12-07T10:00:00Z"},
         "feedback[0].outcome"),
        ({"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "yesterday"},
         "feedback[0].outcomeTimestamp"),
        ({"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-12-07T10:00:00Z",
          "overrideReason": {"reason": {"system": cds_hooks.OVERRIDE_REASON_SYSTEM, "code": "unsafe_interaction"}}},
         "feedback[0].overrideReason.reason.code"),
    ]
    for entry, path in bad:
        r = client.post(f"/cds-services/{SIGN}/feedback", json={"feedback": [entry]}, headers=auth("prescriber"))
        assert r.status_code == 400 and r.json()["issue"][0]["expression"] == [path], (path, r.text)
    r = client.post(f"/cds-services/{SELECT}/feedback", json={"feedback": [
        {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-12-07T10:00:00Z"}]},
        headers=auth("prescriber"))
    assert r.status_code == 400 and SIGN in r.json()["detail"]


# --- security ------------------------------------------------------------------------------------------------


def test_jwt_checks(client, ehr_keys):
    path = f"/cds-services/{SIGN}"
    body = corpus_body("age")
    ok = token(ehr_keys, path)
    assert client.post(path, json=body, headers=bearer(ok)).status_code == 200
    other_key = ec.generate_private_key(ec.SECP384R1())
    cases = {
        "replayed": ok,
        "missing": None,
        "wrong signature": token(ehr_keys, path, key=other_key),
        "untrusted issuer": token(ehr_keys, path, iss="https://evil.example.org"),
        "wrong aud": token(ehr_keys, path, aud=f"{BASE}/cds-services/{SELECT}"),
        "expired": token(ehr_keys, path, exp_in=-3600),
        "too long-lived": token(ehr_keys, path, exp_in=24 * 3600),
        "unknown kid": token(ehr_keys, path, kid="nope"),
        "no jti": jwt.encode({"iss": ISS, "aud": f"{BASE}{path}", "iat": int(time.time()),
                              "exp": int(time.time()) + 60}, ehr_keys["ec"], algorithm="ES384",
                             headers={"kid": "ec-1"}),
        "HMAC": jwt.encode({"iss": ISS, "aud": f"{BASE}{path}", "iat": int(time.time()), "exp": int(time.time()) + 60,
                            "jti": "x"}, "a-shared-secret-of-32-bytes-at-least!!", algorithm="HS256",
                           headers={"kid": "ec-1"}),
        "foreign jku": token(ehr_keys, path, headers={"jku": "https://evil.example.org/jwks"}),
        "unknown API key": "not-a-key-0123456789",
    }
    for why, tok in cases.items():
        r = client.post(path, json=body, headers=bearer(tok) if tok else {})
        assert r.status_code == 401, (why, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer" and r.json()["resourceType"] == "OperationOutcome", why
    assert client.post(path, json=body, headers=auth("chat")).status_code == 403
    for role in ("prescriber", "pharmacist", "admin"):  # the existing API keys keep working
        assert client.post(path, json=corpus_body("age"), headers=auth(role)).status_code == 200


def test_jti_replay_is_refused_by_another_replica(cds_app, ehr_keys, pg_schema_url):
    """Two app instances on one PostgreSQL database: a token used on one is refused on the other."""
    path = f"/cds-services/{SIGN}"
    tok = token(ehr_keys, path)
    with TestClient(cds_app(pg_schema_url)) as a, TestClient(cds_app(pg_schema_url)) as b:
        assert a.post(path, json=corpus_body("age"), headers=bearer(tok)).status_code == 200
        r = b.post(path, json=corpus_body("age"), headers=bearer(tok))
        assert r.status_code == 401 and "replay" in r.json()["detail"]


def test_jwt_not_accepted_when_no_issuer_is_configured(cds_app, ehr_keys, tmp_path):
    with TestClient(cds_app(f"sqlite:///{tmp_path / 'n.db'}", cds_issuers={})) as c:
        r = c.get("/cds-services", headers=bearer(token(ehr_keys, "/cds-services")))
        assert r.status_code == 401 and "RXT_CDS_ISSUERS" in r.json()["detail"]
        assert c.get("/cds-services", headers=auth("prescriber")).status_code == 200


# --- bad input and what cannot be checked --------------------------------------------------------------------


def _order(**changes) -> dict:
    base = copy.deepcopy(corpus_case("age")["draftOrders"]["entry"][0]["resource"])
    base.update(changes)
    return base


def _with_orders(*orders, prefetch=None) -> dict:
    return hook_body("order-sign", {"userId": "Practitioner/1", "patientId": "p1", "draftOrders": {
        "resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}},
        prefetch if prefetch is not None else copy.deepcopy(corpus_case("age")["prefetch"]))


def test_bad_input_is_a_400_operation_outcome_naming_the_path(client):
    good = corpus_body("age")
    no_subject = _order()
    del no_subject["subject"]
    cases = [
        (b"{not json", "body"),
        ({**good, "hook": "patient-view"}, "hook"),
        ({k: v for k, v in good.items() if k != "hookInstance"}, "hookInstance"),
        ({**good, "context": {**good["context"], "draftOrders": None}}, "context.draftOrders"),
        ({**good, "context": {k: v for k, v in good["context"].items() if k != "patientId"}}, "context.patientId"),
        (_with_orders(no_subject), "context.draftOrders.entry[0].resource.subject"),
        (_with_orders(_order(dosageInstruction=[{"timing": {"repeat": {"frequency": "often"}}}])),
         "context.draftOrders.entry[0].resource.dosageInstruction[0].timing.repeat.frequency"),
        ({**good, "prefetch": {"patient": {"resourceType": "Pationt"}}}, "prefetch.patient.resourceType"),
        ({**good, "prefetch": {"patient": {"resourceType": "Patient", "birthDate": "1925-13-01"}}},
         "prefetch.patient.birthDate"),
        ({**good, "prefetch": []}, "prefetch"),
        # a NUL character cannot be stored in any text column: refused, never half-recorded
        (_with_orders(_order(medicationCodeableConcept={"text": "warfarin\u0000"})),
         "context.draftOrders.entry[0].resource (drug)"),
        ({**good, "context": {**good["context"], "userId": "Practitioner/\u0000"}}, "context.userId"),
    ]
    for body, path in cases:
        kwargs = {"content": body, "headers": {**auth("prescriber"), "Content-Type": "application/json"}} \
            if isinstance(body, bytes) else {"json": body, "headers": auth("prescriber")}
        r = client.post(f"/cds-services/{SIGN}", **kwargs)
        assert r.status_code == 400, (path, r.text)
        out = r.json()
        assert out["resourceType"] == "OperationOutcome" and out["issue"][0]["expression"] == [path], out
    r = client.post("/cds-services/nope", json=good, headers=auth("prescriber"))
    assert r.status_code == 404 and r.json()["issue"][0]["code"] == "not-found"
    r = client.post(f"/cds-services/{SELECT}", json={**good, "hook": "order-select"}, headers=auth("prescriber"))
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["context.selections"]


def _rules(cards):
    assert_cards_valid(cards)
    return [c["detail"].split("`")[1] for c in cards]


def test_what_cannot_be_checked_is_an_info_card(client):
    unmapped = _order(id="u", medicationCodeableConcept={"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                                     "code": "999999999"}]})
    bad_unit = _order(id="v", dosageInstruction=[{"doseAndRate": [{"doseQuantity": {
        "value": 2, "unit": "mg/kg", "system": "http://unitsofmeasure.org", "code": "mg/kg"}}]}])
    no_med = _order(id="w", medicationCodeableConcept=None, medicationReference={"reference": "Medication/absent"})
    del no_med["medicationCodeableConcept"]
    prefetch = copy.deepcopy(corpus_case("renal")["prefetch"])
    prefetch["renal"]["entry"][0]["resource"]["valueQuantity"] = {"value": 1.9, "unit": "mg/dL",
                                                                  "system": "http://unitsofmeasure.org",
                                                                  "code": "mg/dL"}
    metformin = copy.deepcopy(corpus_case("renal")["draftOrders"]["entry"][0]["resource"])
    r = call(client, SIGN, _with_orders(unmapped, bad_unit, no_med, metformin, prefetch=prefetch))
    assert r.status_code == 200, r.text
    cards = r.json()["cards"]
    rules = _rules(cards)
    for rule in ("CDS-MEDICATION-UNMAPPED", "CDS-DOSE-UNIT-UNMAPPED", "CDS-MEDICATION-NOT-PROVIDED",
                 "CDS-OBSERVATION-UNIT", "CDS-RENAL-NOT-CHECKED", "CDS-ALLERGIES-MISSING"):
        card = cards[rules.index(rule)]
        assert card["indicator"] == "info" and card["summary"].startswith("Not checked:"), rule
    unmapped_card = cards[rules.index("CDS-MEDICATION-UNMAPPED")]
    assert "999999999" in unmapped_card["detail"] and "MedicationRequest/u" in unmapped_card["detail"]
    # an order with nothing to map and no patient: nothing is reported as checked
    r = call(client, SIGN, _with_orders(unmapped, prefetch={}))
    assert set(_rules(r.json()["cards"])) == {"CDS-MEDICATION-UNMAPPED", "CDS-PATIENT-MISSING",
                                               "CDS-ALLERGIES-MISSING", "CDS-MEDICATIONS-MISSING"}


# --- the mapping, directly ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kb(rx_checker):
    return rx_checker.kb


def _ctx(*orders):
    return {"userId": "Practitioner/1", "patientId": "p1", "draftOrders": {
        "resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}}


def _mr(med, dosage=None, **extra):
    return {"resourceType": "MedicationRequest", "id": "m1", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": med,
            "dosageInstruction": [dosage or {}], **extra}


def test_mapping_of_codings_timing_route_and_as_needed(kb):
    atc = _mr({"coding": [{"system": "http://www.whocc.no/atc", "code": "B01AA03"}]}, {
        "timing": {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation",
                                        "code": "BID"}]}},
        "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006", "display": "Oral route"}]},
        "asNeededBoolean": True,
        "doseAndRate": [{"doseRange": {"low": {"value": 2, "code": "mg", "system": "http://unitsofmeasure.org"},
                                       "high": {"value": 5, "code": "mg", "system": "http://unitsofmeasure.org"}}}]})
    m = map_hook(_ctx(atc), {}, kb)
    item = m.prescription.items[0]
    assert (item.drug, item.frequency, item.route, item.prn, item.dose, item.unit) == \
        ("warfarin", "bid", "oral", True, 5, "mg")  # a dose range is checked at its high end
    q8h = _mr({"text": "Amoxicillin 500 MG Oral Capsule [Amoxil]"}, {
        "timing": {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h", "boundsDuration": {
            "value": 1, "unit": "week", "code": "wk", "system": "http://unitsofmeasure.org"}}},
        "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "capsule", "code": "{capsule}",
                                          "system": "http://unitsofmeasure.org"}}]})
    item = map_hook(_ctx(q8h), {}, kb).prescription.items[0]
    assert (item.drug, item.frequency, item.dose, item.unit, item.duration_days) == \
        ("Amoxicillin 500 MG Oral Capsule", "3 times a day", 1, "cap", 7)
    weekly = _mr({"text": "methotrexate 2.5 mg oral tablet"}, {"timing": {"repeat": {
        "frequency": 1, "period": 1, "periodUnit": "wk"}}})
    assert map_hook(_ctx(weekly), {}, kb).prescription.items[0].frequency == "q7d"
    sig_only = _mr({"text": "ibuprofen"}, {"text": "400 mg po q6h prn pain"})
    item = map_hook(_ctx(sig_only), {}, kb).prescription.items[0]
    assert item.sig == "ibuprofen 400 mg po q6h prn pain"
    assert clean_drug_text("Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML Oral Suspension") == \
        ("Amoxicillin / clavulanate potassium Oral Suspension", 120.0)


def test_mapping_of_patient_observations_and_conditions(kb):
    obs = lambda code, value, unit, when="2026-12-01T08:00:00Z": {  # noqa: E731
        "resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "code": unit, "system": "http://unitsofmeasure.org"}}
    prefetch = {
        "patient": {"resourceType": "Patient", "gender": "female", "birthDate": "2016-06-01"},
        "weight": {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": obs("29463-7", 44, "[lb_av]", "2026-12-01T08:00:00Z")},
            {"resource": obs("29463-7", 10, "kg", "2020-01-01T08:00:00Z")}]},  # older: ignored
        "renal": {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": obs("2164-2", 1.0, "mL/s")}]},
        "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                          "code": {"text": "Primary biliary cholangitis"},
                          "stage": [{"summary": {"text": "Child-Pugh class C"}}]}},
            {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                          "clinicalStatus": {"coding": [{"code": "resolved"}]}, "code": {"text": "asthma"}}}]},
        "pregnancy": {"resourceType": "Observation", "status": "final", "code": {"coding": [
            {"system": "http://loinc.org", "code": "82810-3"}]}, "valueCodeableConcept": {"coding": [
                {"system": "http://snomed.info/sct", "code": "60001007", "display": "Not pregnant"}]}},
    }
    m = map_hook(_ctx(_mr({"text": "paracetamol"})), prefetch, kb, today=date(2026, 12, 7))
    p = m.prescription.patient
    assert p.sex == "female" and 10.4 < p.age_years < 10.6
    assert p.weight_kg == pytest.approx(19.958, abs=0.01)
    assert p.crcl == 60 and p.egfr is None
    assert p.hepatic_impairment == "severe" and p.pregnant is False
    assert p.conditions == ["Primary biliary cholangitis"]  # the resolved asthma is not a condition


def test_mapping_errors_name_the_path(kb):
    with pytest.raises(MappingError) as e:
        map_hook(_ctx(_mr({"text": "warfarin"}, {"doseAndRate": [{"doseQuantity": {"value": "lots"}}]})), {}, kb)
    assert e.value.path == "context.draftOrders.entry[0].resource.dosageInstruction[0].doseAndRate[0]" \
                           ".doseQuantity.value"
    with pytest.raises(MappingError) as e:
        map_hook(_ctx(*[_mr({"text": "warfarin"}, id=f"m{i}") for i in range(51)]), {}, kb)
    assert e.value.path == "context.draftOrders.entry"


def test_jwks_fetched_from_a_configured_url(cds_app, ehr_keys, tmp_path):
    """The issuer's JWK Set at a configured URL (a real HTTP server on loopback): fetched, cached, and a jku header
    must name exactly that URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "www"
    served.mkdir()
    (served / "jwks.json").write_text(ehr_keys["jwks_path"].read_text())
    hits = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        with TestClient(cds_app(f"sqlite:///{tmp_path / 'u.db'}", cds_issuers={ISS: url})) as c:
            for _ in range(2):
                r = c.get("/cds-services", headers=bearer(token(ehr_keys, "/cds-services", headers={"jku": url})))
                assert r.status_code == 200, r.text
            assert hits == ["/jwks.json"]  # cached after the first fetch
            r = c.get("/cds-services", headers=bearer(token(ehr_keys, "/cds-services",
                                                            headers={"jku": url + "?other"})))
            assert r.status_code == 401 and "jku" in r.json()["detail"]
    finally:
        server.shutdown()
        thread.join(timeout=5)
