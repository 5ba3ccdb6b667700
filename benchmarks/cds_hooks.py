"""Benchmark of the CDS Hooks order-sign service (not a test): cards/s and p50/p99 for a 5-order draft, in-process
and over HTTP, beside the plain JSON check of the same prescription in the same run.

    .venv/bin/python benchmarks/cds_hooks.py [--kb PATH] [--n 500] [--http-requests 300] [--concurrency 1]

The draft: 5 MedicationRequests (warfarin, aspirin, ibuprofen at 4x1200 mg, metformin, lisinopril) for a
72-year-old with weight, eGFR, an allergy, two conditions and two active medications in ``prefetch``: it answers
about a dozen cards (interactions, dose with update suggestions, renal, age, allergy-class ...).

In-process (rules only, after warm-up): ``POST /v1/prescriptions/check``'s work (pydantic validation + check) vs the
CDS path (FHIR parse with fhir.resources + mapping + the same check + cards).  HTTP: the real app under uvicorn on
a loopback port (SQLite review database in a temp dir, as in production every call is recorded: the JSON check
in the review queue / audit log, the CDS call as cards + a cds.hook audit entry), sequential requests per client
thread: the JSON check with an API key, the CDS call with an API key and with an ES384 JWT (verification + jti
stored in the database).  Goal: p99 < 100 ms for the CDS call (the specification asks for about 500 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

UCUM = "http://unitsofmeasure.org"


def _mr(i: int, text: str, dose: float, freq: int) -> dict:
    return {"resourceType": "MedicationRequest", "id": f"bench-{i}", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": text},
            "dosageInstruction": [{
                "timing": {"repeat": {"frequency": freq, "period": 1, "periodUnit": "d"}},
                "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006",
                                      "display": "Oral route"}]},
                "doseAndRate": [{"doseQuantity": {"value": dose, "unit": "mg", "system": UCUM, "code": "mg"}}]}]}


def _obs(code: str, value: float, unit: str) -> dict:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "effectiveDateTime": "2026-12-01T08:00:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def _bundle(*resources) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


ORDERS = [("Warfarin 5 MG Oral Tablet", 5, 1), ("aspirin 325 mg oral tablet", 325, 1),
          ("ibuprofen 800 mg oral tablet", 1200, 4), ("metformin 500 mg oral tablet", 1000, 2),
          ("lisinopril 10 mg oral tablet", 10, 1)]
PREFETCH = {
    "patient": {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1954-03-01"},
    "medications": _bundle(*[{"resourceType": "MedicationRequest", "id": f"cur-{i}", "status": "active",
                              "intent": "order", "subject": {"reference": "Patient/p1"},
                              "medicationCodeableConcept": {"text": t}} for i, t in enumerate(["sertraline",
                                                                                               "furosemide"])]),
    "allergies": _bundle({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"},
                          "code": {"text": "sulfa"}}),
    "conditions": _bundle(*[{"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                             "code": {"text": t}} for t in ("Peptic ulcer", "Asthma")]),
    "weight": _bundle(_obs("29463-7", 80, "kg")),
    "renal": _bundle(_obs("33914-3", 40, "mL/min/{1.73_m2}")),
    "pregnancy": _bundle(),
}
# the same prescription as the JSON API takes it
JSON_RX = {"patient": {"age_years": 72.8, "sex": "male", "weight_kg": 80, "egfr": 40, "allergies": ["sulfa"],
                       "conditions": ["Peptic ulcer", "Asthma"], "current_medications": ["sertraline", "furosemide"]},
           "items": [{"drug": t, "dose": d, "unit": "mg", "route": "oral", "frequency": f"{f} times a day"}
                     for t, d, f in ORDERS]}


def hook_body() -> dict:
    return {"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "fhirServer": "https://ehr.example.org/fhir",
            "context": {"userId": "Practitioner/1", "patientId": "p1", "draftOrders": {
                "resourceType": "Bundle", "type": "collection",
                "entry": [{"resource": _mr(i, *o)} for i, o in enumerate(ORDERS)]}},
            "prefetch": PREFETCH}


def _q(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


def in_process(checker, settings, n: int) -> list[dict]:
    from prescription_check import Prescription
    from serving import cds_hooks

    svc = cds_hooks.SERVICES["rxtriage-order-sign"]
    raw = json.dumps(hook_body()).encode()
    raw_json = json.dumps(JSON_RX).encode()

    def json_check():
        return len(checker.check(Prescription.model_validate_json(raw_json)).findings)

    def cds_call():
        req = cds_hooks.parse_hook_request(cds_hooks.parse_json(raw), svc)
        return len(cds_hooks.evaluate(svc, req, checker, settings).cards)

    out = []
    for name, fn in (("JSON check (validate + check)", json_check), ("CDS order-sign (parse FHIR + map + check + "
                                                                      "cards)", cds_call)):
        for _ in range(30):
            items = fn()
        lat = []
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            fn()
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        out.append({"name": name, "per_s": n / wall, "p50": _q(lat, 0.5), "p99": _q(lat, 0.99), "min": min(lat) * 1000,
                    "items": items})
    return out


def http(checker, requests: int, concurrency: int) -> list[dict]:
    import httpx
    import jwt
    import uvicorn
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    from serving.app import create_app
    from serving.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="cdsbench-"))
    key = "bench-prescriber-key-not-secret"
    ec_key = ec.generate_private_key(ec.SECP384R1())
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "k1",
                                          "alg": "ES384"}]}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    iss = "https://ehr.example.org"
    settings = Settings(work_dir=tmp / "var", api_keys={key: "prescriber"}, kb_path=checker.kb.path,
                        triage_model_uri=str(tmp / "no-triage-model"), cds_issuers={iss: str(jwks)}, cds_base_url=url)
    app = create_app(settings, checker=checker)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code < 500:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    path = "/cds-services/rxtriage-order-sign"

    def jwt_header():
        now = int(time.time())
        tok = jwt.encode({"iss": iss, "aud": url + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
                         ec_key, algorithm="ES384", headers={"kid": "k1"})
        return {"Authorization": f"Bearer {tok}"}

    variants = [
        ("JSON POST /v1/prescriptions/check (API key)", "/v1/prescriptions/check", lambda: JSON_RX, None),
        ("CDS order-sign (API key)", path, hook_body, None),
        ("CDS order-sign (ES384 JWT, jti stored)", path, hook_body, jwt_header),
    ]
    out = []
    try:
        for name, target, body, headers in variants:
            lat: list[float] = []
            cards = [0]
            errors = [0]
            lock = threading.Lock()
            per_thread = max(1, requests // concurrency)

            def worker():
                with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
                    for i in range(per_thread + 5):
                        payload = body()
                        extra = headers() if headers else None
                        t = time.perf_counter()
                        r = client.post(target, json=payload, headers=extra)
                        d = time.perf_counter() - t
                        if i < 5:
                            continue  # warm-up
                        with lock:
                            lat.append(d)
                            if r.status_code != 200:
                                errors[0] += 1
                            else:
                                data = r.json()
                                cards[0] += len(data.get("cards", data.get("findings", [])))

            t0 = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            out.append({"name": name, "requests": len(lat), "rps": len(lat) / wall, "items_per_s": cards[0] / wall,
                        "p50": _q(lat, 0.5), "p99": _q(lat, 0.99), "min": min(lat) * 1000, "errors": errors[0],
                        "items": cards[0] // max(1, len(lat))})
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=Path, default=None)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--http-requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--no-http", action="store_true")
    args = ap.parse_args(argv)

    from evaluation.cpu_info import describe_cpu
    from prescription_check import Checker
    from prescription_check.kb import KnowledgeBase
    from serving.settings import get_settings

    path = args.kb or get_settings().resolved_kb_path()
    if not path.exists():
        from training.kb_build import ensure_kb

        ensure_kb(get_settings().model_copy(update={"kb_path": path}))
    print(f"CPU: {describe_cpu()}")
    print(f"load average before (shared 2-core machine): {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    checker = Checker.load(path)
    settings = get_settings()
    print(f"## In-process, 5-order draft ({args.n} calls each, rules only, KB {checker.kb_version})\n")
    print("| path | calls/s | min ms | p50 ms | p99 ms | findings / cards per call | cards/s |\n|---|---|---|---|---|---|---|")
    rows = in_process(checker, settings, args.n)
    for r in rows:
        print(f"| {r['name']} | {r['per_s']:,.0f} | {r['min']:.2f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['items']} | "
              f"{r['per_s'] * r['items']:,.0f} |")
    print(f"\nCDS / JSON time per call: {rows[0]['per_s'] / rows[1]['per_s']:.2f}x")
    if not args.no_http:
        print(f"\n## HTTP (uvicorn on loopback, {args.concurrency} client thread(s), {args.http_requests} requests "
              "each after 5 warm-up, every call recorded in SQLite)\n")
        print("| endpoint | requests | req/s | min ms | p50 ms | p99 ms | findings / cards per call | cards/s | errors | "
              "goal p99 < 100 ms |\n|---|---|---|---|---|---|---|---|---|---|")
        for r in http(checker, args.http_requests, args.concurrency):
            goal = "yes" if r["p99"] < 100 else "no"
            print(f"| {r['name']} | {r['requests']} | {r['rps']:,.1f} | {r['min']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                  f"{r['items']} | {r['items_per_s']:,.0f} | {r['errors']} | {goal if 'CDS' in r['name'] else '-'} |")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
