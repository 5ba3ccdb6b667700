"""The hot path of ``POST /v1/prescriptions/check`` (issue #16, serving/routes/prescriptions.py): requests of the
ordinary shape skip FastAPI's dependency solving and answer what the standard handler answers; every other request
is answered by the standard handler, exactly as before; small checks run on the event loop, large ones in the
thread pool; the batch-size metric; the start-up heap frozen out of the cyclic GC in the served process."""

from __future__ import annotations

import asyncio
import gc
import json
import threading

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from prescription_check import Checker, Prescription
from serving import deps
from serving.audit import verify_chain
from serving.db.session import _Deadline, _Watchdog
from serving.routes.prescriptions import INLINE_MAX_DRUGS
from tests.plugins.db import auth

FLAGGED = {"id": "fast-1", "prescriber_id": "dr-1",
           "patient": {"age_years": 67, "weight_kg": 70, "allergies": ["penicillin"]},
           "items": [{"sig": "warfarin 5 mg daily"}, {"sig": "ibuprofen 400mg q8h prn pain"},
                     {"sig": "Amoxicillin 500 mg PO TID x 7 days"}]}
CLEAN = {"id": "fast-2", "patient": {"age_years": 40}, "items": [{"sig": "omeprazole 20 mg daily"}]}
RECORD_FIELDS = ("queued", "review_id", "audit_id")


class RecordingChecker(Checker):
    """The real checker, noting whether each check ran on the event loop's thread."""

    def __init__(self, base: Checker) -> None:
        super().__init__(base.kb, base.policy, None, "rules-only: test")
        self.on_loop: list[bool] = []

    def check(self, rx):
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        return super().check(rx)


def _without_record(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in RECORD_FIELDS}


def test_fast_and_standard_paths_answer_alike(review_app, db_url):
    app = review_app(db_url)
    solved = []

    async def counting_checker(request: Request):  # the standard path's checker dependency, counted
        solved.append(1)
        return request.app.state.rxt.checker.require()

    app.dependency_overrides[deps._checker] = counting_checker  # noqa: SLF001
    with TestClient(app) as client:
        served = app.state.rxt.checker.current  # the checker with the alert-tier settings applied at start-up
        expected = {name: served.check(Prescription.model_validate(body)).model_dump(mode="json")
                    for name, body in (("flagged", FLAGGED), ("clean", CLEAN))}
        answers = {}
        for name, body in (("flagged", FLAGGED), ("clean", CLEAN)):
            fast = client.post("/v1/prescriptions/check", json=body, headers=auth("prescriber"))
            assert fast.status_code == 200, fast.text
            assert solved == []  # answered without FastAPI's dependency solving
            # a +json media type is JSON to FastAPI but not the fast path's shape: the standard handler answers
            standard = client.post("/v1/prescriptions/check", content=json.dumps(body).encode(),
                                   headers={**auth("pharmacist"), "Content-Type": "application/vnd.rxt+json"})
            assert standard.status_code == 200, standard.text
            assert solved == [1]
            solved.clear()
            assert fast.headers["content-type"] == standard.headers["content-type"] == "application/json"
            assert _without_record(fast.json()) == _without_record(standard.json()) == expected[name]
            answers[name] = (fast.json(), standard.json())
        assert answers["flagged"][0]["queued"] and answers["flagged"][1]["queued"]
        assert not answers["clean"][0]["queued"] and not answers["clean"][1]["queued"]
        ids = sorted(a["audit_id"] for pair in answers.values() for a in pair)
        assert ids == [1, 2, 3, 4]
        with app.state.rxt.db.sessions() as s:
            assert verify_chain(s).ok
        metrics = client.get("/metrics").text
    counts = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
              if line.startswith("rxt_check_commit_batch_size_")}
    assert counts["rxt_check_commit_batch_size_sum"] == 4  # every check went through the group-commit writer
    # the client sends one check at a time and each answer waits for its commit: four batches of one
    assert counts["rxt_check_commit_batch_size_count"] == 4


def test_non_ascii_answer_is_utf8_json(review_app, tmp_path):
    app = review_app(f"sqlite:///{tmp_path / 'utf8.db'}")
    body = {"id": "ordonnance-é-中", "items": [{"drug": "paracétamol", "dose": 1, "unit": "g", "frequency": "q6h"}]}
    with TestClient(app) as client:
        r = client.post("/v1/prescriptions/check", json=body, headers=auth("prescriber"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert "paracétamol" in r.content.decode("utf-8")  # sent as UTF-8, not \\u escapes (as JSONResponse did)
    assert json.loads(r.content)["verdict"] in ("pass", "review", "block")


@pytest.mark.parametrize("case", [
    "no key", "unknown key", "chat role", "malformed JSON", "not UTF-8", "invalid prescription", "no body",
    "text/plain", "no content type", "key too long", "key not printable",
])
def test_unusual_requests_get_the_standard_answers(review_app, tmp_path, case):
    """Every request the fast path does not take is answered by FastAPI's handler: the statuses and bodies of
    before (tests/serving/test_input_errors.py pins more of the messages)."""
    app = review_app(f"sqlite:///{tmp_path / 'errors.db'}")
    ok_body = json.dumps(CLEAN).encode()
    headers = {**auth("prescriber"), "Content-Type": "application/json"}
    content = ok_body
    expect_status, expect_field = 422, None
    if case == "no key":
        headers.pop("Authorization")
        expect_status = 401
    elif case == "unknown key":
        headers["Authorization"] = "Bearer not-a-key"
        expect_status = 401
    elif case == "chat role":
        headers.update(auth("chat"))
        expect_status = 403
    elif case == "malformed JSON":
        content, expect_status, expect_field = b'{"items": [', 400, "body"
    elif case == "not UTF-8":
        content, expect_status, expect_field = b'{"items": "\xff"}', 400, "body"
    elif case == "invalid prescription":
        content, expect_field = json.dumps({"items": []}).encode(), "items"
    elif case == "no body":
        content, expect_field = b"", "body"
    elif case == "text/plain":
        headers["Content-Type"] = "text/plain"
        expect_field = "body"
    elif case == "no content type":
        headers.pop("Content-Type")
        expect_field = "body"
    elif case == "key too long":
        headers["Idempotency-Key"] = "k" * 201
        expect_field = "Idempotency-Key"
    elif case == "key not printable":
        headers["Idempotency-Key"] = "a\tb"
        expect_field = "Idempotency-Key"
    with TestClient(app) as client:
        r = client.post("/v1/prescriptions/check", content=content, headers=headers)
        assert r.status_code == expect_status, r.text
        body = r.json()
        assert body["detail"] and body["request_id"] == r.headers["x-request-id"]
        if expect_status == 401:
            assert r.headers["www-authenticate"] == "Bearer"
        if expect_field is not None:
            assert expect_field in [e["field"] for e in body["errors"]], body
        with app.state.rxt.db.sessions() as s:
            assert verify_chain(s).checked == 0  # nothing was recorded


def test_idempotency_key_replays_on_the_fast_path(review_app, tmp_path):
    app = review_app(f"sqlite:///{tmp_path / 'idem.db'}")
    headers = {**auth("prescriber"), "Idempotency-Key": "fast-key-1"}
    with TestClient(app) as client:
        first = client.post("/v1/prescriptions/check", json=FLAGGED, headers=headers)
        again = client.post("/v1/prescriptions/check", json=FLAGGED, headers=headers)
        other = client.post("/v1/prescriptions/check", json=CLEAN, headers=headers)
    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"


def test_small_checks_run_on_the_event_loop_large_ones_in_a_thread(review_app, tmp_path):
    app = review_app(f"sqlite:///{tmp_path / 'inline.db'}")
    meds = ["metformin", "atorvastatin", "amlodipine", "lisinopril", "omeprazole", "sertraline", "cetirizine",
            "levothyroxine", "paracetamol", "aspirin", "simvastatin", "ramipril", "bisoprolol"]
    small = {"patient": {"age_years": 60, "current_medications": meds[:INLINE_MAX_DRUGS - 2]},
             "items": [{"sig": "warfarin 5 mg daily"}, {"sig": "ibuprofen 400mg q8h prn pain"}]}
    large = {"patient": {"age_years": 60, "current_medications": meds[:INLINE_MAX_DRUGS - 1]},
             "items": [{"sig": "warfarin 5 mg daily"}, {"sig": "ibuprofen 400mg q8h prn pain"}]}
    with TestClient(app) as client:
        checker = app.state.rxt.checker.current = RecordingChecker(app.state.rxt.checker.current)
        answers = [client.post("/v1/prescriptions/check", json=body, headers=auth("prescriber"))
                   for body in (small, large)]
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert checker.on_loop == [True, False]
    for body, r in zip((small, large), answers):
        expected = Checker.check(checker, Prescription.model_validate(body)).model_dump(mode="json")
        assert _without_record(r.json()) == expected


def test_watchdog_wakes_for_an_earlier_deadline_only_when_needed():
    """The watchdog is not woken for every unit of work, yet an earlier deadline armed after a later one still
    fires at its time (its connections are cut)."""
    dog = _Watchdog()
    import time

    late, early = _Deadline(time.monotonic() + 60), _Deadline(time.monotonic() + 0.2)
    cut = threading.Event()
    dog.arm(late)  # starts the thread, which then sleeps until `late`
    dog.arm(early)
    dog.attach(early, 1, cut.set)
    assert cut.wait(10), "the earlier deadline did not fire"
    assert early.expired and not late.expired
    then = _Deadline(time.monotonic() + 0.3)  # later than nothing pending but `late`: earlier than it, so woken
    cut2 = threading.Event()
    dog.arm(then)
    dog.attach(then, 2, cut2.set)
    assert cut2.wait(10)
    dog.disarm(late)


def test_served_process_freezes_its_start_up_heap(review_app, tmp_path):
    from serving.app import create_app

    base = review_app(f"sqlite:///{tmp_path / 'gc.db'}")
    assert gc.get_freeze_count() == 0
    with TestClient(base):
        assert gc.get_freeze_count() == 0  # tests and other embedders: nothing frozen
    app = create_app(base.state.rxt.settings, checker=base.state.rxt.checker.current, freeze_gc=True)
    try:
        with TestClient(app) as client:
            assert gc.get_freeze_count() > 100_000  # the KB, the libraries ...
            r = client.post("/v1/prescriptions/check", json=CLEAN, headers=auth("prescriber"))
            assert r.status_code == 200
    finally:
        gc.unfreeze()


class _SeenByStack:
    """A pure-ASGI middleware in the app's generic stack: records which requests went through it."""

    def __init__(self, app, seen: list) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


class _FailingChecker(Checker):
    def __init__(self, base: Checker) -> None:
        super().__init__(base.kb, base.policy, None, "rules-only: test")

    def check(self, rx):
        raise RuntimeError("patient value 123-45-6789 in a message")


def _count(app, status: int) -> float:
    from serving.routes.prescriptions import CHECK_PATH

    return app.state.rxt.metrics.requests.labels(route=CHECK_PATH, method="POST", status=str(status))._value.get()  # noqa: SLF001


def test_check_lane_skips_the_generic_stack_and_keeps_id_log_and_metrics(review_app, tmp_path, caplog):
    """POST /v1/prescriptions/check goes to the CheckLane (issue #16), not through Starlette's/FastAPI's generic
    per-request stack; the answer keeps its X-Request-ID, access-log line and metrics (once each); a request not
    of the ordinary shape is handed to the full stack with its body and answered there, counted once."""
    from serving.logs import ACCESS_LOGGER

    app = review_app(f"sqlite:///{tmp_path / 'lane.db'}")
    seen: list = []
    app.add_middleware(_SeenByStack, seen=seen)
    caplog.set_level("INFO", logger=ACCESS_LOGGER)
    with TestClient(app) as client:
        seen.clear()
        fast = client.post("/v1/prescriptions/check", json=CLEAN, headers={**auth("prescriber"),
                                                                            "X-Request-ID": "trace-lane-1"})
        assert fast.status_code == 200, fast.text
        assert fast.headers["x-request-id"] == "trace-lane-1"
        assert seen == []  # answered by the lane
        refused = client.post("/v1/prescriptions/check", json=CLEAN, headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["request_id"] == refused.headers["x-request-id"]
        standard = client.post("/v1/prescriptions/check", content=json.dumps(FLAGGED).encode(),
                               headers={**auth("prescriber"), "Content-Type": "application/vnd.rxt+json"})
        assert standard.status_code == 200 and standard.json()["queued"], standard.text  # the body was handed on
        assert seen == [("POST", "/v1/prescriptions/check")] * 2
        assert client.get("/healthz").status_code == 200 and seen[-1] == ("GET", "/healthz")
        assert _count(app, 200) == 2 and _count(app, 401) == 1
        with app.state.rxt.db.sessions() as s:
            assert verify_chain(s).checked == 2
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER
             and getattr(r, "fields", {}).get("route") == "/v1/prescriptions/check"]
    assert [r.fields["status"] for r in lines] == [200, 401, 200]
    assert lines[0].request_id == "trace-lane-1" and lines[0].fields["role"] == "prescriber"


def test_check_lane_errors_are_the_apps_answers(review_app, tmp_path, caplog):
    """On the lane: a body over the limit is a 413, a bad Idempotency-Key a 422 by the app's handler, a bug a JSON
    500 quoting the request id without the exception's message -- on the lane and on the handed-over path."""
    app = review_app(f"sqlite:///{tmp_path / 'lane-errors.db'}", max_request_bytes=2000)
    with TestClient(app) as client:
        big = client.post("/v1/prescriptions/check", json={**CLEAN, "id": "x" * 3000}, headers=auth("prescriber"))
        assert big.status_code == 413 and big.json()["errors"][0]["field"] == "body"
        blank_key = client.post("/v1/prescriptions/check", json=CLEAN,
                                headers={**auth("prescriber"), "Idempotency-Key": "   "})
        assert blank_key.status_code == 422 and blank_key.json()["errors"][0]["field"] == "Idempotency-Key"
        app.state.rxt.checker.current = _FailingChecker(app.state.rxt.checker.current)
        for content_type in ("application/json", "application/vnd.rxt+json"):
            r = client.post("/v1/prescriptions/check", content=json.dumps(CLEAN).encode(),
                            headers={**auth("prescriber"), "Content-Type": content_type})
            assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text
            assert r.json()["request_id"] == r.headers["x-request-id"] and "123-45" not in r.text
        assert _count(app, 500) == 2 and _count(app, 413) == 1 and _count(app, 422) == 1
        with app.state.rxt.db.sessions() as s:
            assert verify_chain(s).checked == 0
    assert "123-45" not in caplog.text
