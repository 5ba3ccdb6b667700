"""Outcome feedback for triage (issue 15): what the service keeps about each answer, outcomes matched to it, the
purge, and the live-monitoring gauges.

- Every ``POST /v1/triage`` answer becomes a :class:`AnswerRecord` (request id, model version, sha256 of the text,
  the prediction, a 16-number *sketch* of the embedding) handed to :class:`FeedbackRecorder`: a bounded queue and
  one writer thread that inserts in batches.  Nothing of this runs on the answering path but a ``put_nowait``;
  when the queue is full or the database is down past the retries, records are dropped and counted
  (``rxt_feedback_dropped_total{reason}``), the answers never wait.
- The complaint text is kept only when ``RXT_FEEDBACK_KEEP_TEXT`` is on AND the request said
  ``feedback_consent: true``; otherwise only its sha256.
- ``record_outcome`` stores where the patient was actually seen (a taxonomy center) and, optionally, the urgency a
  clinician assigned: one per request id, idempotent (the same body answers the same; another body is a 409), 404
  for an id never recorded (or purged), 410 past ``RXT_FEEDBACK_OUTCOME_DAYS``, 422 for an unknown center or
  urgency.  ``delete_outcome`` removes the outcome and the stored text and sketch of one request.
- ``purge`` deletes texts and sketches older than ``RXT_FEEDBACK_RETENTION_DAYS`` and records that old without an
  outcome (the writer runs it at start-up and hourly; ``python -m serving.feedback purge`` runs it once).
- The sketch is a fixed random projection (seed ``SKETCH_SEED``) of the L2-normalised pooled embedding onto
  ``SKETCH_DIM`` dimensions: enough to see a shift of the input distribution, far too little to recover a text.
  The model artefact's ``reference.json`` (written by training: the same sketch and statistics over its validation
  texts) is the reference the ``rxt_triage_live_embedding_shift`` gauge and ``python -m training monitor`` compare to.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.db.models import ShadowScore, TriageOutcome, TriageRecord
from serving.db.session import Database, DatabaseUnavailable, describe, session_scope
from serving.logs import SERVICE_LOGGER, log_event
from serving.metrics import Metrics
from serving.review_queue import ReviewError
from serving.settings import Settings, get_settings
from triage.classifier import latin_share
from triage.taxonomy import URGENCY_LEVELS

log = logging.getLogger(SERVICE_LOGGER)

SKETCH_DIM = 16
SKETCH_SEED = 15
REFERENCE_FILE = "reference.json"  # beside the model artefact (written by training.triage_train)
NON_LATIN = 0.5  # a text with less than this share of Latin letters counts as "not Latin script"
WRITE_BATCH = 256
PURGE_EVERY_S = 3600.0
RETRIES = 5
RECENT_GRACE_S = 2.0  # an outcome for an unknown id waits this long for a not-yet-written answer (any worker's)


# --- errors (answered by serving.errors' review-error handler: status, detail, field) ---------------------------


class FeedbackError(ReviewError):
    pass


class OutcomeNotFound(FeedbackError):
    status_code = 404


class OutcomeExpired(FeedbackError):
    status_code = 410


class OutcomeConflict(FeedbackError):
    status_code = 409


class InvalidOutcome(FeedbackError):
    status_code = 422


# --- the embedding sketch -----------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _projection(dim: int) -> np.ndarray:
    rng = np.random.default_rng(SKETCH_SEED)
    return (rng.standard_normal((dim, SKETCH_DIM)) / math.sqrt(SKETCH_DIM)).astype(np.float32)


def sketch(embeddings: np.ndarray) -> np.ndarray:
    """(n, d) pooled embeddings -> (n, SKETCH_DIM) sketches (L2-normalised first, then projected)."""
    x = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ _projection(x.shape[1])


def reference_stats(texts: list[str], predictions: list[Any], model_version: str | None = None,
                    sample: int = 400, seed: int = 15) -> dict:
    """The statistics the live traffic is compared to: over ``texts`` (a model's validation texts) and that
    model's ``predictions`` of them.  Written as ``reference.json`` beside the artefact by training."""
    embeddings = [p.embedding for p in predictions if getattr(p, "embedding", None) is not None]
    sketches = sketch(np.stack(embeddings)) if embeddings else np.zeros((0, SKETCH_DIM), np.float32)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(texts))[:sample])
    centers = [p.centers[0][0] for p in predictions]
    counts: dict[str, int] = {}
    for c in centers:
        counts[c] = counts.get(c, 0) + 1
    return {
        "format": 1,
        "model_version": model_version,
        "n": len(texts),
        "sketch_dim": SKETCH_DIM,
        "sketch_seed": SKETCH_SEED,
        "sketch_mean": sketches.mean(0).round(6).tolist() if len(sketches) else None,
        "sketch_std": sketches.std(0).round(6).tolist() if len(sketches) else None,
        "center_share": {c: round(n / max(1, len(centers)), 6) for c, n in sorted(counts.items())},
        "confidence_mean": float(np.mean([p.centers[0][1] for p in predictions])) if predictions else None,
        "handoff_rate": float(np.mean([bool(p.abstained) for p in predictions])) if predictions else None,
        "text_chars_mean": float(np.mean([len(t) for t in texts])) if texts else None,
        "nonlatin_share": float(np.mean([latin_share(t) < NON_LATIN for t in texts])) if texts else None,
        "sample": {
            "sketch": sketches[keep[keep < len(sketches)]].round(5).tolist() if len(sketches) else [],
            "confidence": [round(float(predictions[i].centers[0][1]), 6) for i in keep],
            "center": [centers[i] for i in keep],
            "abstained": [bool(predictions[i].abstained) for i in keep],
            "text_chars": [len(texts[i]) for i in keep],
            "latin_share": [round(latin_share(texts[i]), 4) for i in keep],
        },
    }


def load_reference(folder: str | Path | None) -> dict | None:
    if folder is None:
        return None
    path = Path(folder) / REFERENCE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("sketch_mean") else None


def embedding_shift(live: np.ndarray, reference: dict) -> float | None:
    """Mean over sketch dimensions of |live mean - reference mean| / reference std (0: same centre)."""
    if live is None or not len(live) or not reference or not reference.get("sketch_mean"):
        return None
    mu = np.asarray(reference["sketch_mean"], dtype=np.float64)
    sd = np.maximum(np.asarray(reference["sketch_std"], dtype=np.float64), 1e-6)
    return float(np.mean(np.abs(np.asarray(live, dtype=np.float64).mean(0) - mu) / sd))


# --- what is kept per answer ------------------------------------------------------------------------------------


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AnswerRecord:
    request_id: str
    created_at: datetime
    model_version: str
    taxonomy_version: str | None
    text_sha256: str
    text_chars: int
    latin_share: float
    language: str | None
    consent: bool
    text: str | None
    predicted_center: str
    confidence: float
    answered_center: str
    urgency: str
    abstained: bool
    red_flags: int
    sketch: list[float] | None = None


def make_record(settings: Settings, request_id: str, text: str, language: str | None, consent: bool | None,
                outcome: Any, answer: dict, now: datetime | None = None) -> AnswerRecord:
    """An answer as kept: the text only with the deployment's setting AND the request's consent."""
    keep = bool(settings.feedback_keep_text and consent)
    top = outcome.centers[0] if outcome.centers else ("", 0.0)
    embedding = getattr(outcome, "embedding", None)
    answered = answer.get("centers") or [{"id": top[0]}]
    return AnswerRecord(
        request_id=request_id, created_at=now or datetime.now(UTC), model_version=str(outcome.model_version),
        taxonomy_version=None if outcome.taxonomy_version is None else str(outcome.taxonomy_version),
        text_sha256=text_sha256(text), text_chars=len(text), latin_share=round(latin_share(text), 4),
        language=language, consent=bool(consent), text=text if keep else None, predicted_center=str(top[0]),
        confidence=float(top[1]), answered_center=str(answered[0]["id"]), urgency=str(outcome.urgency),
        abstained=bool(outcome.abstained), red_flags=len(outcome.flags or ()),
        sketch=None if embedding is None else [round(float(v), 5) for v in sketch(embedding)[0]],
    )


@dataclass(frozen=True)
class ShadowRow:
    request_id: str
    scored_at: datetime
    champion_version: str
    challenger_version: str
    champion_center: str
    challenger_center: str
    champion_confidence: float
    challenger_confidence: float
    champion_abstained: bool
    challenger_abstained: bool
    agree: bool


def _insert_ignore(session: Session, table, rows: list[dict]) -> None:
    """INSERT ... ON CONFLICT (request_id) DO NOTHING: a client's repeated X-Request-ID keeps the first answer."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(table).on_conflict_do_nothing(index_elements=["request_id"]), rows)


def write(session: Session, records: Iterable[AnswerRecord] = (), shadows: Iterable[ShadowRow] = ()) -> int:
    """Insert answer records, then shadow rows whose record exists (a dropped record drops its shadow row)."""
    recs = [asdict(r) for r in records]
    _insert_ignore(session, TriageRecord.__table__, recs)
    shadow = [asdict(s) for s in shadows]
    if shadow:
        ids = [s["request_id"] for s in shadow]
        present = set(session.scalars(select(TriageRecord.request_id).where(TriageRecord.request_id.in_(ids))))
        _insert_ignore(session, ShadowScore.__table__, [s for s in shadow if s["request_id"] in present])
    return len(recs)


# --- outcomes ---------------------------------------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def validate_outcome(taxonomy: Any, actual_center: str, clinician_urgency: str | None) -> None:
    ids = taxonomy.ids()
    if actual_center not in ids:
        raise InvalidOutcome(f"actual_center {actual_center!r} is not a center of taxonomy {taxonomy.version}; "
                             f"one of: {', '.join(ids)}", field="actual_center")
    if clinician_urgency is not None and clinician_urgency not in URGENCY_LEVELS:
        raise InvalidOutcome(f"clinician_urgency {clinician_urgency!r} is not an urgency level; one of: "
                             f"{', '.join(URGENCY_LEVELS)}", field="clinician_urgency")


def _body_hash(actual_center: str, clinician_urgency: str | None) -> str:
    body = json.dumps({"actual_center": actual_center, "clinician_urgency": clinician_urgency}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def outcome_answer(record: TriageRecord, outcome: TriageOutcome) -> dict:
    return {
        "request_id": record.request_id,
        "actual_center": outcome.actual_center,
        "clinician_urgency": outcome.clinician_urgency,
        "model_version": record.model_version,
        "predicted_center": record.predicted_center,
        "answered_center": record.answered_center,
        "predicted_urgency": record.urgency,
        "top1_correct": record.predicted_center == outcome.actual_center,
        "answered_at": _aware(record.created_at).isoformat(),
        "recorded_at": _aware(outcome.recorded_at).isoformat(),
        "text_kept": record.text is not None,
    }


def find_record(session: Session, request_id: str) -> TriageRecord | None:
    return session.get(TriageRecord, request_id)


def record_outcome(session: Session, settings: Settings, taxonomy: Any, request_id: str, actual_center: str,
                   clinician_urgency: str | None, actor: str, now: datetime | None = None) -> tuple[dict, bool]:
    """Store the outcome of one answer: ``(answer, created)``; see the module docstring for the refusals."""
    validate_outcome(taxonomy, actual_center, clinician_urgency)
    now = now or datetime.now(UTC)
    record = find_record(session, request_id)
    if record is None:
        raise OutcomeNotFound(f"no triage answer with request_id {request_id!r} is on record (never answered here, "
                              f"answered while feedback recording was off or dropped, or purged after "
                              f"{settings.feedback_retention_days:g} days)", field="request_id")
    body_hash = _body_hash(actual_center, clinician_urgency)
    existing = session.get(TriageOutcome, request_id)
    if existing is None:
        age = now - _aware(record.created_at)
        if age > timedelta(days=settings.feedback_outcome_days):
            raise OutcomeExpired(f"request_id {request_id!r} was answered {age.days} days ago; outcomes are accepted "
                                 f"for {settings.feedback_outcome_days:g} days (RXT_FEEDBACK_OUTCOME_DAYS)",
                                 field="request_id")
        try:
            with session.begin_nested():
                existing = TriageOutcome(request_id=request_id, actual_center=actual_center,
                                         clinician_urgency=clinician_urgency, body_sha256=body_hash,
                                         recorded_at=now, recorded_by=actor)
                session.add(existing)
            return outcome_answer(record, existing), True
        except IntegrityError:  # a concurrent POST of the same id won: compare with what it stored
            existing = session.get(TriageOutcome, request_id, populate_existing=True)
            if existing is None:
                raise
    if existing.body_sha256 != body_hash:
        raise OutcomeConflict(
            f"request_id {request_id!r} already has a different outcome (actual_center={existing.actual_center!r}, "
            f"clinician_urgency={existing.clinician_urgency!r}); DELETE /v1/triage/outcomes/{request_id} first to "
            f"replace it", field="request_id")
    return outcome_answer(record, existing), False


def delete_outcome(session: Session, request_id: str, now: datetime | None = None) -> dict:
    """Remove one request's outcome and its stored text and sketch (the hash and prediction stay)."""
    record = find_record(session, request_id)
    if record is None:
        raise OutcomeNotFound(f"no triage answer with request_id {request_id!r} is on record", field="request_id")
    deleted = session.execute(delete(TriageOutcome).where(TriageOutcome.request_id == request_id)).rowcount
    had_text = record.text is not None
    record.text = None
    record.sketch = None
    record.purged_at = now or datetime.now(UTC)
    return {"request_id": request_id, "outcome_deleted": bool(deleted), "text_deleted": had_text}


def purge(session: Session, settings: Settings, now: datetime | None = None) -> dict:
    """Texts and sketches past the retention: deleted; records that old without an outcome: deleted."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=settings.feedback_retention_days)
    with_outcome = select(TriageOutcome.request_id)
    records = session.execute(
        delete(TriageRecord).where(TriageRecord.created_at < cutoff)
        .where(TriageRecord.request_id.not_in(with_outcome))).rowcount
    texts = session.execute(
        update(TriageRecord).where(TriageRecord.created_at < cutoff)
        .where((TriageRecord.text.is_not(None)) | (TriageRecord.sketch.is_not(None)))
        .values(text=None, sketch=None, purged_at=now)).rowcount
    return {"cutoff": cutoff.isoformat(), "texts_deleted": int(texts or 0), "records_deleted": int(records or 0)}


async def submit_outcome(db: Database, recorder: "FeedbackRecorder | None", settings: Settings, taxonomy: Any,
                         metrics: Metrics, request_id: str, actual_center: str, clinician_urgency: str | None,
                         actor: str) -> dict:
    """``POST /v1/triage/outcomes``: validate, store (idempotently), count; an id still in the writer's queue is
    written first (an outcome sent right after its answer is not a 404)."""
    import asyncio

    if recorder is None or not recorder.enabled:
        raise OutcomeNotFound(f"no triage answer with request_id {request_id!r} is on record: this service does not "
                              f"record answers (RXT_FEEDBACK_ENABLED=false)", field="request_id")
    validate_outcome(taxonomy, actual_center, clinician_urgency)

    def work() -> tuple[dict, bool]:
        with db.session() as session:
            return record_outcome(session, settings, taxonomy, request_id, actual_center, clinician_urgency, actor)

    try:
        answer, created = await db.run(work)
    except OutcomeNotFound:
        # The answer may not be written yet: still in this worker's writer queue, or in another worker's (one
        # worker per core; replicas on one database) -- an outcome sent right after its answer is not a 404.
        if recorder.pending():
            await asyncio.to_thread(recorder.wait_idle, RECENT_GRACE_S)
        deadline = time.monotonic() + RECENT_GRACE_S
        while True:
            try:
                answer, created = await db.run(work)
                break
            except OutcomeNotFound:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)
    if created:
        metrics.outcomes.labels(match="top1" if answer["top1_correct"] else "miss").inc()
    return {**answer, "created": created}


async def remove_outcome(db: Database, request_id: str) -> dict:
    """``DELETE /v1/triage/outcomes/{request_id}``."""

    def work() -> dict:
        with db.session() as session:
            return delete_outcome(session, request_id)

    return await db.run(work)


# --- the writer -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    request_id: str
    text: str
    language: str | None
    consent: bool | None
    outcome: Any
    answered_center: str
    at: datetime


@dataclass
class _Live:
    """The last ``window`` answers of one model version, behind the rxt_triage_live_* gauges, with running sums so
    that a gauge update costs the same whatever the window (recomputing means over the whole window per written
    batch cost ~5% of the served CPU at ~100 answers/s); the sums are recomputed exactly once per ``window``
    additions, so rounding never accumulates."""

    window: int
    version: str | None = None
    reference: dict | None = None
    rows: deque = field(default_factory=deque)
    sums: np.ndarray = field(default_factory=lambda: np.zeros(4))  # confidence, abstained, non-Latin, chars
    sketch_sum: np.ndarray | None = None
    sketch_n: int = 0
    added: int = 0

    @staticmethod
    def _values(r) -> np.ndarray:
        return np.array([r.confidence, float(r.abstained), float(r.latin_share < NON_LATIN), r.text_chars],
                        dtype=np.float64)

    def reset(self, version: str | None, reference: dict | None) -> None:
        self.version, self.reference, self.rows = version, reference, deque()
        self.sums, self.sketch_sum, self.sketch_n, self.added = np.zeros(4), None, 0, 0

    def _count(self, r, sign: int) -> None:
        self.sums += sign * self._values(r)
        if r.sketch is not None:
            vec = np.asarray(r.sketch, dtype=np.float64)
            self.sketch_sum = sign * vec if self.sketch_sum is None else self.sketch_sum + sign * vec
            self.sketch_n += sign

    def add(self, r) -> None:
        if self.window <= 0:
            return
        if len(self.rows) >= self.window:
            self._count(self.rows.popleft(), -1)
        self.rows.append(r)
        self._count(r, +1)
        self.added += 1
        if self.added % max(self.window, 1) == 0:  # exact again
            rows = list(self.rows)
            self.reset(self.version, self.reference)
            self.rows.extend(rows)
            for row in rows:
                self._count(row, +1)

    def means(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(mean confidence, hand-off share, non-Latin share, mean chars) and the mean sketch (None without)."""
        n = max(len(self.rows), 1)
        sketch_mean = self.sketch_sum / self.sketch_n if self.sketch_n else None
        return self.sums / n, sketch_mean


class FeedbackRecorder:
    """Bounded queue + one writer thread (see the module docstring)."""

    def __init__(self, db: Database, settings: Settings, metrics: Metrics,
                 reference_for: Any | None = None) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.enabled = bool(settings.feedback_enabled)
        self._queue: queue.Queue = queue.Queue(maxsize=settings.feedback_queue)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reference_for = reference_for  # model version -> artefact folder (for reference.json), or None
        self._live = _Live(settings.monitor_window)
        self._last_purge = 0.0
        self.last_error: str | None = None

    # answering path: never blocks
    def offer(self, item: AnswerRecord | ShadowRow) -> bool:
        if not self.enabled:
            return False
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            kind = "shadow" if isinstance(item, ShadowRow) else "record"
            self.metrics.feedback_dropped.labels(reason=f"{kind}_queue_full").inc()
            return False

    def offer_answer(self, request_id: str, text: str, language: str | None, consent: bool | None, outcome: Any,
                     answered_center: str) -> bool:
        """The answering path's hand-off: the raw pieces only (a tuple); hashing, the Latin-script share and the
        sketch are computed by the writer thread (``make_record``)."""
        return self.offer(_Raw(request_id, text, language, consent, outcome, answered_center, datetime.now(UTC)))

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until everything offered so far is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    # life cycle
    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rxt-feedback-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Write what is queued (at most ``timeout`` s), then end the thread (a frozen database cannot hold the
        shutdown longer than that plus one database deadline; what is left is dropped)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.wait_idle(timeout)
        self._stop.set()
        thread.join(timeout)

    # writer thread
    def _take(self) -> list:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        items = [first]
        while len(items) < WRITE_BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() - self._last_purge > PURGE_EVERY_S:
                self._purge()
            items = self._take()
            if not items:
                continue
            try:
                self._write(items)
            finally:
                for _ in items:
                    self._queue.task_done()

    def _write(self, items: list) -> None:
        items = [make_record(self.settings, i.request_id, i.text, i.language, i.consent, i.outcome,
                             {"centers": [{"id": i.answered_center}]}, now=i.at) if isinstance(i, _Raw) else i
                 for i in items]
        records = [i for i in items if isinstance(i, AnswerRecord)]
        shadows = [i for i in items if isinstance(i, ShadowRow)]
        for attempt in range(RETRIES):
            try:
                with self.db.deadline(), self.db.session() as session:
                    write(session, records, shadows)
                self.metrics.feedback_recorded.inc(len(records))
                self.last_error = None
                break
            except Exception as exc:  # noqa: BLE001 - a database problem must not kill the writer
                self.last_error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                if attempt == RETRIES - 1 or self._stop.is_set():
                    self.metrics.feedback_dropped.labels(reason="database").inc(len(items))
                    log_event(log, "feedback records dropped: the database did not take them", level=logging.WARNING,
                              records=len(records), shadow=len(shadows), database=describe(self.db.url),
                              error=exc.__class__.__name__)
                    break
                time.sleep(min(2.0, 0.1 * 2 ** attempt))
        self._observe(records)

    def _purge(self) -> None:
        self._last_purge = time.monotonic()
        try:
            with self.db.deadline(), self.db.session() as session:
                result = purge(session, self.settings)
            if result["texts_deleted"] or result["records_deleted"]:
                log_event(log, "feedback purge", **result)
        except (DatabaseUnavailable, Exception) as exc:  # noqa: BLE001 - retried at the next hour
            log_event(log, "feedback purge failed", level=logging.WARNING, error=exc.__class__.__name__)

    # live gauges (writer thread, after each batch)
    def _observe(self, records: list[AnswerRecord]) -> None:
        if not records:
            return
        live, m = self._live, self.metrics
        for r in records:
            if r.model_version != live.version:
                folder = self._reference_for(r.model_version) if self._reference_for else None
                live.reset(r.model_version, load_reference(folder))
            live.add(r)
        means, sketch_mean = live.means()
        m.live_window.set(len(live.rows))
        means = [round(float(x), 9) for x in means]  # running sums: no trailing rounding noise in the gauges
        m.live_confidence.set(means[0])
        m.live_handoff.set(means[1])
        m.live_nonlatin.set(means[2])
        m.live_text_chars.set(means[3])
        shift = embedding_shift(sketch_mean[None, :], live.reference) if sketch_mean is not None else None
        if shift is not None:
            m.live_embedding_shift.set(shift)


# --- command line: python -m serving.feedback purge -------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.feedback", description="feedback store maintenance")
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("purge", help="delete texts/sketches past RXT_FEEDBACK_RETENTION_DAYS and old unmatched records")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.verb == "purge":
        with session_scope(settings) as session:
            print(json.dumps(purge(session, settings)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["AnswerRecord", "FeedbackRecorder", "ShadowRow", "delete_outcome", "embedding_shift", "make_record",
           "purge", "record_outcome", "reference_stats", "sketch", "write"]
