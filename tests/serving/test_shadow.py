"""The shadow challenger's scorer process (issue 15): a real challenger (the session's small triage model) scored in
its own process at idle CPU priority; what the answering path does when the scorer is behind (drops, counted), when
the answering path is itself behind (skips, counted), and when the scorer process dies (drops, then a restart).
The end-to-end test (tests/training/test_feedback_loop.py) checks that answers are unchanged with shadow scoring on.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import pytest

from serving.metrics import Metrics
from serving.settings import Settings
from serving.shadow import ShadowScorer
from triage.taxonomy import load_taxonomy

TEXTS = ["dry cough and fever for three days", "itchy red rash on both elbows", "toothache when I drink cold water",
         "my knee swells up after running", "burning when I pee", "I can't sleep more than four hours"]


@dataclass
class Answer:  # the fields of serving.triage_service.TriageOutcome that the shadow scorer reads
    centers: list
    abstained: bool
    model_version: str


def _metric(metrics: Metrics, name: str, **labels) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


@pytest.fixture
def champion(triage_model_dir):
    from triage.classifier import TriageClassifier

    return TriageClassifier.from_folder(triage_model_dir, intra_op_threads=1)


@pytest.fixture
def scorer_factory(triage_model_dir, tmp_path):
    made: list[ShadowScorer] = []

    def make(uri=None, waiting=None, **overrides):
        settings = Settings(work_dir=tmp_path / "var", api_keys={}, shadow_fraction=1.0,
                            challenger_model_uri=str(uri or triage_model_dir), **overrides)
        rows: list = []
        scorer = ShadowScorer(settings, Metrics(), load_taxonomy(), sink=lambda r: rows.append(r) or True, seed=5,
                              waiting=waiting)
        made.append(scorer)
        return scorer, rows

    yield make
    for scorer in made:
        scorer.stop()


def _answers(champion, texts):
    return [Answer(p.centers, p.abstained, "7") for p in champion.predict(texts)]


def test_challenger_scores_in_its_own_idle_priority_process(scorer_factory, champion):
    scorer, rows = scorer_factory()
    scorer.load()
    assert scorer.holder.version is not None and scorer.holder.last_error is None
    status = scorer.status()
    pid = status["process"]["pid"]
    assert pid != os.getpid() and status["process"]["alive"]
    # the scorer process runs at the lowest priority there is: SCHED_IDLE, nice 19 (every thread, onnxruntime's too)
    assert status["process"]["scheduling"] == "nice 19, SCHED_IDLE"
    tids = os.listdir(f"/proc/{pid}/task")
    assert tids and all(os.sched_getscheduler(int(t)) == os.SCHED_IDLE for t in tids)
    assert all(os.getpriority(os.PRIO_PROCESS, int(t)) == 19 for t in tids)
    # and this process keeps its own priority
    assert os.sched_getscheduler(0) != os.SCHED_IDLE

    answers = _answers(champion, TEXTS)
    assert all(scorer.offer(f"r{i}", text, a) for i, (text, a) in enumerate(zip(TEXTS, answers)))
    assert scorer.wait_idle(120)
    assert sorted(r.request_id for r in rows) == [f"r{i}" for i in range(len(TEXTS))]
    by_id = {r.request_id: r for r in rows}
    for i, a in enumerate(answers):  # same model as challenger: the same top center and confidence
        row = by_id[f"r{i}"]
        assert (row.champion_version, row.challenger_version) == ("7", scorer.holder.version)
        assert row.challenger_center == row.champion_center == a.centers[0][0] and row.agree
        assert row.challenger_confidence == pytest.approx(a.centers[0][1], abs=1e-6)
        assert row.challenger_abstained == a.abstained
    assert _metric(scorer.metrics, "rxt_shadow_scored_total") == len(TEXTS)
    assert _metric(scorer.metrics, "rxt_shadow_agreement_rate") == 1.0


def test_a_scorer_that_falls_behind_drops_shadow_work_never_blocks(scorer_factory, champion):
    scorer, rows = scorer_factory(shadow_queue=2)
    scorer.load()
    pid = scorer.status()["process"]["pid"]
    answers = _answers(champion, TEXTS)
    os.kill(pid, signal.SIGSTOP)  # the scorer gets no CPU at all (a saturated machine, at its extreme)
    try:
        started = time.perf_counter()
        offered = [scorer.offer(f"r{i}", text, a) for i, (text, a) in enumerate(zip(TEXTS, answers))]
        assert time.perf_counter() - started < 5  # generous: the answering path never waited for the scorer
        assert offered == [True, True] + [False] * (len(TEXTS) - 2)
        assert _metric(scorer.metrics, "rxt_shadow_dropped_total", reason="queue_full") == len(TEXTS) - 2
        assert scorer.status()["outstanding"] == 2
    finally:
        os.kill(pid, signal.SIGCONT)
    assert scorer.wait_idle(120)
    assert sorted(r.request_id for r in rows) == ["r0", "r1"]
    assert _metric(scorer.metrics, "rxt_shadow_scored_total") == 2
    assert scorer.offer("r9", TEXTS[0], answers[0])  # room again


def test_a_backlog_on_the_answering_path_skips_the_shadow_draw(scorer_factory, champion):
    backlog = {"n": 40}
    scorer, rows = scorer_factory(shadow_skip_waiting=32, waiting=lambda: backlog["n"])
    scorer.load()
    answers = _answers(champion, TEXTS[:3])
    assert [scorer.offer(f"r{i}", t, a) for i, (t, a) in enumerate(zip(TEXTS, answers))] == [False] * 3
    assert _metric(scorer.metrics, "rxt_shadow_skipped_total", reason="busy") == 3
    backlog["n"] = 31
    assert scorer.offer("r3", TEXTS[0], answers[0])
    assert scorer.wait_idle(120) and [r.request_id for r in rows] == ["r3"]


def test_a_dead_scorer_drops_and_the_next_poll_restarts_it(scorer_factory, champion):
    scorer, rows = scorer_factory()
    scorer.load()
    version = scorer.holder.version
    first = scorer.status()["process"]["pid"]
    answers = _answers(champion, TEXTS[:2])
    os.kill(first, signal.SIGSTOP)
    assert scorer.offer("lost", TEXTS[0], answers[0])
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while scorer.status()["process"]["alive"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not scorer.status()["process"]["alive"]
    assert _metric(scorer.metrics, "rxt_shadow_dropped_total", reason="worker_down") == 1
    assert not scorer.offer("also-lost", TEXTS[0], answers[0])
    assert _metric(scorer.metrics, "rxt_shadow_dropped_total", reason="worker_down") == 2
    result = scorer.poll_once()  # the model poller's next round
    assert result is not None and result.reloaded and scorer.holder.version == version
    assert scorer.status()["process"]["pid"] != first
    assert scorer.offer("back", TEXTS[1], answers[1]) and scorer.wait_idle(120)
    assert [r.request_id for r in rows] == ["back"]


def test_a_broken_challenger_leaves_shadow_scoring_idle(scorer_factory, champion, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "labels.json").write_text("[]")
    scorer, rows = scorer_factory(uri=broken)
    scorer.load()
    assert scorer.holder.model is None and "lacks meta.json" in scorer.holder.last_error
    assert not scorer.offer("r0", TEXTS[0], _answers(champion, TEXTS[:1])[0])
    assert rows == []


def test_a_challenger_with_foreign_labels_never_replaces_the_one_being_scored(scorer_factory, champion,
                                                                               triage_model_dir, tmp_path):
    import json
    import shutil

    foreign = tmp_path / "foreign-model"
    shutil.copytree(triage_model_dir, foreign)
    labels = json.loads((foreign / "labels.json").read_text())
    (foreign / "labels.json").write_text(json.dumps(["podiatry"] + labels[1:]))
    for sidecar in foreign.glob("center_exemplars*"):  # a model of another taxonomy: its own sidecar, or none
        sidecar.unlink()
    scorer, rows = scorer_factory()
    scorer.load()
    good = scorer.holder.version
    result = scorer.holder.reload(str(foreign))
    assert not result.reloaded and "podiatry" in result.error and scorer.holder.version == good
    assert scorer.offer("r0", TEXTS[0], _answers(champion, TEXTS[:1])[0]) and scorer.wait_idle(120)
    assert [(r.request_id, r.challenger_version) for r in rows] == [("r0", good)]


# --- idle moments only (RXT_SHADOW_IDLE_ONLY, RXT_SHADOW_IDLE_MS) -----------------------------------------------------
def test_idle_settings_parse_from_the_environment(monkeypatch, tmp_path):
    from pydantic import ValidationError

    monkeypatch.setenv("RXT_SHADOW_IDLE_ONLY", "false")
    monkeypatch.setenv("RXT_SHADOW_IDLE_MS", "12.5")
    settings = Settings(work_dir=tmp_path, api_keys={})
    assert settings.shadow_idle_only is False and settings.shadow_idle_ms == 12.5
    monkeypatch.delenv("RXT_SHADOW_IDLE_ONLY")
    monkeypatch.delenv("RXT_SHADOW_IDLE_MS")
    defaults = Settings(work_dir=tmp_path, api_keys={})
    assert defaults.shadow_idle_only is True and defaults.shadow_idle_ms == 5.0
    for bad in ("-1", "soon"):
        monkeypatch.setenv("RXT_SHADOW_IDLE_MS", bad)
        with pytest.raises(ValidationError, match="shadow_idle_ms"):
            Settings(work_dir=tmp_path, api_keys={})


def test_the_activity_board_counts_requests_in_flight_for_another_process():
    from serving.shadow_worker import ActivityBoard

    board = ActivityBoard()
    try:
        reader = ActivityBoard(os.dup(board.fd))  # what the scorer process maps (its inherited descriptor)
        assert reader.read()[0] == 0
        board.enter()
        board.enter()
        assert reader.read() == (2, 0.0)
        board.leave()
        assert reader.read() == (1, 0.0)
        board.leave()
        in_flight, idle_for = reader.read()
        assert in_flight == 0 and idle_for >= 0.0
        board.leave()  # never below zero
        assert reader.read()[0] == 0
        os.close(reader.fd)
    finally:
        board.close()


def test_the_request_middleware_marks_the_worker_busy_while_a_request_is_in_flight():
    import asyncio

    from serving.middleware import RequestContextMiddleware
    from serving.shadow_worker import ActivityBoard

    board = ActivityBoard()
    seen = []

    async def app(scope, receive, send):
        seen.append(board.read()[0])
        if scope["path"] == "/boom":
            raise RuntimeError("unexpected")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def call(path):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await RequestContextMiddleware(app, Metrics(), activity=board)(
            {"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
        return sent[0]["status"]

    try:
        assert asyncio.run(call("/ok")) == 200 and seen == [1] and board.read()[0] == 0
        assert asyncio.run(call("/boom")) == 500 and seen == [1, 1] and board.read()[0] == 0  # an error leaves too
    finally:
        board.close()


def test_the_scorer_holds_drawn_requests_while_the_worker_is_busy_and_scores_them_when_it_is_idle(
        scorer_factory, champion):
    scorer, rows = scorer_factory(shadow_idle_ms=0)
    assert scorer.activity is not None
    scorer.load()
    assert scorer.status()["idle_only"]
    answers = _answers(champion, TEXTS)
    scorer.activity.enter()  # a request in flight (what the middleware does)
    try:
        assert all(scorer.offer(f"r{i}", t, a) for i, (t, a) in enumerate(zip(TEXTS, answers)))
        # the scorer process is up and reading the board (it loaded the challenger); while the worker is busy
        # it scores nothing, whatever time it is given
        assert not scorer.wait_idle(1.0)
        assert rows == [] and scorer.status()["outstanding"] == len(TEXTS)
        assert _metric(scorer.metrics, "rxt_shadow_scored_total") == 0
    finally:
        scorer.activity.leave()
    assert scorer.wait_idle(120)  # idle again: everything held is scored
    assert sorted(r.request_id for r in rows) == [f"r{i}" for i in range(len(TEXTS))]
    assert all(r.agree for r in rows)
    assert _metric(scorer.metrics, "rxt_shadow_scored_total") == len(TEXTS)


def test_a_scorer_held_back_by_a_busy_worker_still_drops_past_its_queue(scorer_factory, champion):
    scorer, rows = scorer_factory(shadow_queue=3)
    scorer.load()
    answers = _answers(champion, TEXTS)
    scorer.activity.enter()
    try:
        offered = [scorer.offer(f"r{i}", t, a) for i, (t, a) in enumerate(zip(TEXTS, answers))]
        assert offered == [True] * 3 + [False] * (len(TEXTS) - 3)
        assert _metric(scorer.metrics, "rxt_shadow_dropped_total", reason="queue_full") == len(TEXTS) - 3
    finally:
        scorer.activity.leave()
    assert scorer.wait_idle(120) and sorted(r.request_id for r in rows) == ["r0", "r1", "r2"]


def test_without_idle_only_the_scorer_scores_as_requests_come(scorer_factory, champion):
    scorer, rows = scorer_factory(shadow_idle_only=False)
    assert scorer.activity is None
    scorer.load()
    assert not scorer.status()["idle_only"]
    answers = _answers(champion, TEXTS[:2])
    assert all(scorer.offer(f"r{i}", t, a) for i, (t, a) in enumerate(zip(TEXTS, answers)))
    assert scorer.wait_idle(120) and sorted(r.request_id for r in rows) == ["r0", "r1"]
