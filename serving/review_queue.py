"""The pharmacist review queue: store flagged checks, list them, decide them, count overrides.

Everything here works on a SQLAlchemy session (or a :class:`serving.db.Database` where the function owns
its transactions) and is used by the JSON API (``serving/routes/reviews.py``), the check endpoint
(``serving/routes/prescriptions.py``) and the web page (``serving/routes/review_page.py``).

Decisions
- ``approve`` (dispense as written; for a contraindicated or major finding this is an *override* and needs
  a reason code), ``reject`` and ``request_change`` (both always need a reason code).  ``other`` needs a note.
- Only a ``pending`` review can be decided, once: the update is conditional on the row's ``version`` and
  status, so of two concurrent deciders exactly one succeeds and the other gets :class:`Conflict` (409).
- An ``Idempotency-Key`` makes a decision safe to retry: the same key with the same request returns the
  first answer (``replayed``); the same key with a different request (other review, decision, reason, note
  or pharmacist) is refused with :class:`IdempotencyMismatch` (422).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prescription_check.schemas import SEVERITIES, SEVERITY_RANK
from serving import audit
from serving.db.models import (
    DECISION_STATUS,
    DECISIONS,
    STATUSES,
    CdsCard,
    CdsFeedback,
    CheckIdempotencyKey,
    IdempotencyKey,
    Review,
    ReviewFinding,
    utcnow,
)
from serving.db.session import Database, insert_rows

# --- reason codes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReasonCode:
    code: str
    label: str
    decisions: tuple[str, ...]
    needs_note: bool = False


_APPROVE = ("approve",)
_REFUSE = ("reject", "request_change")

REASON_CODES: dict[str, ReasonCode] = {
    r.code: r
    for r in [
        # approve = dispense despite the alert (an override when a finding is contraindicated or major)
        ReasonCode("clinically_appropriate", "Clinically appropriate for this patient", _APPROVE),
        ReasonCode("benefit_outweighs_risk", "Benefit outweighs the risk", _APPROVE),
        ReasonCode("patient_tolerated_previously", "Patient has tolerated this before", _APPROVE),
        ReasonCode("dose_confirmed_with_prescriber", "Dose confirmed with the prescriber", _APPROVE),
        ReasonCode("monitoring_in_place", "Monitoring in place (levels, INR, renal function...)", _APPROVE),
        ReasonCode("alert_not_applicable", "Alert does not apply (wrong data, already stopped...)", _APPROVE),
        ReasonCode("duplicate_intended", "Duplicate therapy is intended (e.g. cross-taper)", _APPROVE),
        ReasonCode("prescriber_changed", "Prescriber changed the order after consultation", _APPROVE),
        # reject / request a change
        ReasonCode("unsafe_interaction", "Unsafe drug interaction", _REFUSE),
        ReasonCode("dose_out_of_range", "Dose or frequency out of range", _REFUSE),
        ReasonCode("allergy_risk", "Allergy or cross-sensitivity", _REFUSE),
        ReasonCode("contraindicated_condition", "Contraindicated by a condition", _REFUSE),
        ReasonCode("age_pregnancy_or_lactation_risk", "Unsuitable for age, pregnancy or breastfeeding", _REFUSE),
        ReasonCode("renal_or_hepatic_adjustment", "Needs renal or hepatic adjustment", _REFUSE),
        ReasonCode("duplicate_therapy", "Unintended duplicate therapy", _REFUSE),
        ReasonCode("unrecognised_drug", "Drug or sig not recognisable", _REFUSE),
        ReasonCode("needs_clarification", "Needs clarification from the prescriber", ("request_change",)),
        ReasonCode("other", "Other (explain in the note)", ("approve", "reject", "request_change"), needs_note=True),
    ]
}
OVERRIDE_SEVERITIES: frozenset[str] = frozenset({"contraindicated", "major"})
NOTE_MAX_CHARS = 2000
IDEMPOTENCY_KEY_MAX = 200


def reason_codes_for(decision: str) -> list[ReasonCode]:
    return [r for r in REASON_CODES.values() if decision in r.decisions]


# --- errors ---------------------------------------------------------------------------------


class ReviewError(Exception):
    status_code = 400

    def __init__(self, detail: str, *, field: str | None = None, extra: dict | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra or {}


class NotFound(ReviewError):
    status_code = 404


class Conflict(ReviewError):
    status_code = 409


class InvalidDecision(ReviewError):
    status_code = 422


class IdempotencyMismatch(ReviewError):
    status_code = 422


# --- helpers --------------------------------------------------------------------------------


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive (they are stored in UTC); make every timestamp UTC-aware."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_utc(value: datetime | date | None, *, end_of_day: bool = False) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.combine(value, time.max if end_of_day else time.min)
    # naive input means UTC; SQLite stores the UTC wall time, PostgreSQL a timestamptz: both compare right
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def max_severity(findings: list[dict]) -> str | None:
    ranks = [SEVERITY_RANK[f["severity"]] for f in findings if f.get("severity") in SEVERITY_RANK]
    return SEVERITIES[min(ranks)] if ranks else None


def should_queue(verdict: str, findings: list[dict], queue_min_severity: str) -> bool:
    """Queue a check when its verdict is review/block and its worst finding is at least the threshold."""
    if queue_min_severity not in SEVERITY_RANK:
        raise ValueError(f"queue_min_severity must be one of {SEVERITIES}, not {queue_min_severity!r}")
    worst = max_severity(findings)
    return verdict in ("review", "block") and worst is not None and (
        SEVERITY_RANK[worst] <= SEVERITY_RANK[queue_min_severity]
    )


def sha256_json(value: Any) -> str:
    return hashlib.sha256(audit.canonical_json(value).encode("utf-8")).hexdigest()


# --- storing a check ------------------------------------------------------------------------


_INSERT_REVIEW = Review.__table__.insert()
_INSERT_FINDING = ReviewFinding.__table__.insert()


@dataclass(frozen=True)
class CheckRecord:
    queued: bool
    review_id: int | None
    audit_id: int


def _summarise(prescription: dict, result: dict) -> tuple[list[dict], str, str | None, dict]:
    findings = list(result.get("findings") or [])
    verdict = result["verdict"]
    worst = max_severity(findings)
    summary = {
        "verdict": verdict,
        "max_severity": worst,
        "rule_ids": [f.get("rule_id") for f in findings],
        "tiers": [f.get("tier") for f in findings],
        "counselling_notes": len(result.get("counselling_notes") or []),
        "kb_version": result.get("kb_version"),
        "model_version": result.get("model_version"),
        "prescription_sha256": sha256_json(prescription),
    }
    return findings, verdict, worst, summary


def _review_row(prescription: dict, result: dict, actor: str, findings: list[dict], verdict: str,
                worst: str) -> dict:
    return {
        "created_at": utcnow(),
        "submitted_by": actor,
        "prescription_ref": prescription.get("id"),
        "prescriber_id": prescription.get("prescriber_id"),
        "prescription": {k: v for k, v in prescription.items() if k != "patient"},
        "patient": prescription.get("patient") or {},
        "findings": findings,
        "normalized_items": list(result.get("items") or []),
        "verdict": verdict,
        "max_severity": worst,
        "severity_rank": SEVERITY_RANK[worst],
        "kb_version": str(result.get("kb_version") or "unknown"),
        "model_version": result.get("model_version"),
        "model_status": result.get("model_status") or None,
        "status": "pending",
        "decision": None, "reason_code": None, "note": None, "decided_at": None, "decided_by": None,
        "version": 1,
    }


def _finding_rows(review_id: int, findings: list[dict]) -> list[dict]:
    return [{"review_id": review_id, "rule_id": str(f.get("rule_id") or "unknown"),
             "category": str(f.get("category") or "unknown"), "severity": str(f.get("severity"))}
            for f in findings]


def _unqueued_subject(prescription: dict, summary: dict) -> str:
    return f"prescription:{prescription.get('id') or summary['prescription_sha256'][:16]}"


def record_check(session: Session, *, prescription: dict, result: dict, actor: str,
                 queue_min_severity: str) -> CheckRecord:
    """Store a flagged check as a pending review (plus its audit entry) in the caller's transaction.

    ``prescription`` is the request (``Prescription.model_dump(mode="json")``), ``result`` the checker's answer
    (``CheckResult.model_dump(mode="json")``).  Checks that are not queued get a light audit entry only
    (verdict, rule ids, versions and the prescription's sha256; no patient data).
    """
    findings, verdict, worst, summary = _summarise(prescription, result)
    if not should_queue(verdict, findings, queue_min_severity):
        audit_id = audit.record(session, actor=actor, action="prescription.check",
                                subject=_unqueued_subject(prescription, summary), after={**summary, "queued": False})
        return CheckRecord(False, None, audit_id)
    # plain Core inserts (no ORM unit of work): this runs once per flagged check, on the request path
    review_id = session.execute(
        _INSERT_REVIEW.returning(Review.__table__.c.id),
        _review_row(prescription, result, actor, findings, verdict, worst),
    ).scalar_one()
    session.execute(_INSERT_FINDING, _finding_rows(review_id, findings))
    audit_id = audit.record(session, actor=actor, action="prescription.check", subject=f"review:{review_id}",
                            after={**summary, "queued": True, "review_id": review_id, "status": "pending"})
    return CheckRecord(True, review_id, audit_id)


@dataclass(frozen=True)
class CheckJob:
    """One check waiting to be recorded (the arguments of :func:`record_check`)."""

    prescription: dict
    result: dict
    actor: str
    queue_min_severity: str


def record_checks(session: Session, jobs: list[CheckJob]) -> list[CheckRecord]:
    """:func:`record_check` for several checks in the caller's transaction, with a number of statements that
    does not grow with the number of checks: the flagged ones' reviews in one INSERT ... RETURNING, their
    findings in one statement (``insert_rows``), every audit entry through :func:`serving.audit.append_many` (the head taken
    and moved once).  The reviews, findings and chain are the same as ``len(jobs)`` calls of
    :func:`record_check` in list order.  Used by the group commit (``serving.group_commit``)."""
    prepared = []
    for job in jobs:
        findings, verdict, worst, summary = _summarise(job.prescription, job.result)
        prepared.append((job, findings, verdict, worst, summary,
                         should_queue(verdict, findings, job.queue_min_severity)))
    queued = [p for p in prepared if p[5]]
    review_ids: list[int] = []
    if queued:
        review_ids = list(session.execute(
            _INSERT_REVIEW.returning(Review.__table__.c.id, sort_by_parameter_order=True),
            [_review_row(job.prescription, job.result, job.actor, findings, verdict, worst)
             for job, findings, verdict, worst, _, _ in queued],
        ).scalars())
        finding_rows = [row for (_, findings, *_), rid in zip(queued, review_ids)
                        for row in _finding_rows(rid, findings)]
        insert_rows(session, ReviewFinding.__table__, finding_rows)
    ids = iter(review_ids)
    entries, review_of = [], []
    for job, _, _, _, summary, is_queued in prepared:
        if is_queued:
            rid = next(ids)
            entries.append({"actor": job.actor, "action": "prescription.check", "subject": f"review:{rid}",
                            "after": {**summary, "queued": True, "review_id": rid, "status": "pending"}})
        else:
            rid = None
            entries.append({"actor": job.actor, "action": "prescription.check",
                            "subject": _unqueued_subject(job.prescription, summary),
                            "after": {**summary, "queued": False}})
        review_of.append(rid)
    appended = audit.append_many(session, entries)
    return [CheckRecord(rid is not None, rid, audit_id) for rid, (audit_id, _) in zip(review_of, appended)]


def clean_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise InvalidDecision(f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX} printable characters",
                              field="Idempotency-Key")
    return key


@dataclass(frozen=True)
class CheckOutcome:
    body: dict[str, Any]
    replayed: bool = False


def record_check_once(db: Database, *, prescription: dict, result: dict, actor: str, queue_min_severity: str,
                      idempotency_key: str | None = None) -> CheckOutcome:
    """Record a check (:func:`record_check`) and build its answer, in one transaction.

    With an ``Idempotency-Key`` the first answer is stored with it: the same key with the same prescription
    (and caller) gets that answer again (``replayed``), without a second review or audit entry, even when both
    requests race (the loser's transaction is rolled back and it finds the winner's answer); the same key with a
    different request is :class:`IdempotencyMismatch` (422).
    """
    key = clean_idempotency_key(idempotency_key)
    request_hash = sha256_json({"prescription": prescription, "actor": actor})

    def replay(session: Session) -> CheckOutcome | None:
        stored = _stored_answer(session, CheckIdempotencyKey, key, request_hash,
                                lambda _: "a different prescription check; use a new key for a new check")
        return None if stored is None else CheckOutcome(stored.response, replayed=True)

    try:
        with db.session() as session:
            if key is not None and (found := replay(session)) is not None:
                return found
            stored = record_check(session, prescription=prescription, result=result, actor=actor,
                                  queue_min_severity=queue_min_severity)
            body = {**result, "queued": stored.queued, "review_id": stored.review_id, "audit_id": stored.audit_id}
            if key is not None:
                session.add(CheckIdempotencyKey(key=key, request_hash=request_hash, actor=actor,
                                                audit_id=stored.audit_id, response=body, created_at=utcnow()))
                session.flush()
            return CheckOutcome(body)
    except IntegrityError:
        if key is None:
            raise
        with db.session() as session:  # a concurrent request with the same key committed first
            found = replay(session)
        if found is None:
            raise
        return found


# --- reading --------------------------------------------------------------------------------


def review_summary(review: Review) -> dict[str, Any]:
    drugs: list[str] = []
    for item in review.prescription.get("items") or []:
        drugs.append(item.get("drug") or item.get("sig") or "?")
    return {
        "id": review.id,
        "status": review.status,
        "verdict": review.verdict,
        "max_severity": review.max_severity,
        "created_at": aware(review.created_at).isoformat(),
        "prescription_ref": review.prescription_ref,
        "prescriber_id": review.prescriber_id,
        "submitted_by": review.submitted_by,
        "drugs": drugs,
        "finding_count": len(review.findings or []),
        "rule_ids": [f.get("rule_id") for f in review.findings or []],
        "kb_version": review.kb_version,
        "model_version": review.model_version,
        "version": review.version,
        "decision": None if review.decision is None else {
            "decision": review.decision,
            "reason_code": review.reason_code,
            "note": review.note,
            "decided_by": review.decided_by,
            "decided_at": aware(review.decided_at).isoformat() if review.decided_at else None,
        },
    }


def review_detail(session: Session, review: Review) -> dict[str, Any]:
    out = review_summary(review)
    out.update(
        prescription=review.prescription,
        patient=review.patient,
        findings=review.findings,
        normalized_items=review.normalized_items,
        model_status=review.model_status,
        requires_override_reason=requires_override_reason(review),
        audit=[e.as_dict() for e in audit.history(session, subject=f"review:{review.id}")],
    )
    return out


def get_review(session: Session, review_id: int) -> Review:
    review = session.get(Review, review_id)
    if review is None:
        raise NotFound(f"review {review_id} does not exist", field="review_id")
    return review


@dataclass
class Page:
    items: list[Review]
    total: int
    limit: int
    offset: int
    extra: dict = field(default_factory=dict)


def list_reviews(session: Session, *, status: str | None = "pending", severities: list[str] | None = None,
                 min_severity: str | None = None, created_from: datetime | date | None = None,
                 created_to: datetime | date | None = None, limit: int = 50, offset: int = 0) -> Page:
    """Reviews, most severe first, then oldest first.  ``status=None`` or ``"all"``: every status."""
    conditions = []
    if status not in (None, "all"):
        if status not in STATUSES:
            raise InvalidDecision(f"status must be one of {STATUSES + ('all',)}", field="status")
        conditions.append(Review.status == status)
    if severities:
        bad = [s for s in severities if s not in SEVERITY_RANK]
        if bad:
            raise InvalidDecision(f"unknown severity {bad[0]!r}; one of {SEVERITIES}", field="severity")
        conditions.append(Review.max_severity.in_(severities))
    if min_severity is not None:
        if min_severity not in SEVERITY_RANK:
            raise InvalidDecision(f"min_severity must be one of {SEVERITIES}", field="min_severity")
        conditions.append(Review.severity_rank <= SEVERITY_RANK[min_severity])
    start, end = to_utc(created_from), to_utc(created_to, end_of_day=True)
    if start is not None:
        conditions.append(Review.created_at >= start)
    if end is not None:
        conditions.append(Review.created_at <= end)
    where = and_(*conditions) if conditions else None
    count_stmt = select(func.count(Review.id))
    stmt = select(Review).order_by(Review.severity_rank, Review.created_at, Review.id).limit(limit).offset(offset)
    if where is not None:
        count_stmt, stmt = count_stmt.where(where), stmt.where(where)
    total = session.scalar(count_stmt) or 0
    return Page(list(session.scalars(stmt)), int(total), limit, offset)


# --- deciding -------------------------------------------------------------------------------


def requires_override_reason(review: Review) -> bool:
    return any(f.get("severity") in OVERRIDE_SEVERITIES for f in review.findings or [])


def validate_decision(decision: str, reason_code: str | None, note: str | None) -> tuple[str | None, str | None]:
    """Shape checks that do not depend on the review; returns the cleaned (reason_code, note)."""
    if decision not in DECISIONS:
        raise InvalidDecision(f"decision must be one of {', '.join(DECISIONS)}", field="decision")
    reason_code = (reason_code or "").strip() or None
    note = (note or "").strip() or None
    if note is not None and len(note) > NOTE_MAX_CHARS:
        raise InvalidDecision(f"note is longer than {NOTE_MAX_CHARS} characters", field="note")
    if reason_code is not None:
        reason = REASON_CODES.get(reason_code)
        if reason is None:
            raise InvalidDecision(
                f"unknown reason_code {reason_code!r}; allowed for {decision}: "
                + ", ".join(r.code for r in reason_codes_for(decision)),
                field="reason_code",
            )
        if decision not in reason.decisions:
            raise InvalidDecision(
                f"reason_code {reason_code!r} does not fit decision {decision!r}; allowed: "
                + ", ".join(r.code for r in reason_codes_for(decision)),
                field="reason_code",
            )
        if reason.needs_note and not note:
            raise InvalidDecision(f"reason_code {reason_code!r} needs a note explaining it", field="note")
    elif decision in _REFUSE:
        raise InvalidDecision(
            f"{decision} needs a reason_code: " + ", ".join(r.code for r in reason_codes_for(decision)),
            field="reason_code",
        )
    return reason_code, note


@dataclass(frozen=True)
class DecisionOutcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def _request_hash(review_id: int, decision: str, reason_code: str | None, note: str | None, actor: str,
                  expected_version: int | None) -> str:
    return sha256_json({"review_id": review_id, "decision": decision, "reason_code": reason_code, "note": note,
                        "actor": actor, "expected_version": expected_version})


def _stored_answer(session: Session, table, key: str, request_hash: str, used_for):
    """The answer stored under an Idempotency-Key (None when the key is new); the same key with another request is
    :class:`IdempotencyMismatch`, ``used_for(stored)`` saying what the key was used for."""
    stored = session.get(table, key)
    if stored is not None and stored.request_hash != request_hash:
        raise IdempotencyMismatch(f"Idempotency-Key {key!r} was already used for {used_for(stored)}",
                                  field="Idempotency-Key")
    return stored


def _replay(session: Session, key: str, request_hash: str) -> DecisionOutcome | None:
    stored = _stored_answer(session, IdempotencyKey, key, request_hash,
                            lambda row: f"a different request (review {row.review_id}); use a new key for a new "
                                        "decision")
    return None if stored is None else DecisionOutcome(stored.status_code, stored.response, replayed=True)


def decide(db: Database, review_id: int, *, decision: str, actor: str, reason_code: str | None = None,
           note: str | None = None, expected_version: int | None = None,
           idempotency_key: str | None = None) -> DecisionOutcome:
    """Decide a pending review in one transaction (decision + audit entry + idempotency record)."""
    reason_code, note = validate_decision(decision, reason_code, note)
    idempotency_key = clean_idempotency_key(idempotency_key)
    request_hash = _request_hash(review_id, decision, reason_code, note, actor, expected_version)
    try:
        with db.session() as session:
            if idempotency_key is not None:
                replay = _replay(session, idempotency_key, request_hash)
                if replay is not None:
                    return replay
            body = _decide_in(session, review_id, decision=decision, actor=actor, reason_code=reason_code,
                              note=note, expected_version=expected_version)
            if idempotency_key is not None:
                session.add(IdempotencyKey(key=idempotency_key, request_hash=request_hash, actor=actor,
                                           review_id=review_id, status_code=200, response=body, created_at=utcnow()))
                session.flush()
            return DecisionOutcome(200, body)
    except (IntegrityError, Conflict):
        # A concurrent request with the same key may have committed first (PostgreSQL: our UPDATE or INSERT
        # waited for it, then found the row decided / the key taken): answer with its result.
        if idempotency_key is None:
            raise
        with db.session() as session:
            replay = _replay(session, idempotency_key, request_hash)
        if replay is None:
            raise
        return replay


def _decide_in(session: Session, review_id: int, *, decision: str, actor: str, reason_code: str | None,
               note: str | None, expected_version: int | None) -> dict[str, Any]:
    review = get_review(session, review_id)
    if review.status != "pending":
        raise Conflict(
            f"review {review_id} was already decided ({review.status} by {review.decided_by} at "
            f"{aware(review.decided_at).isoformat() if review.decided_at else '?'})",
            extra={"status": review.status, "version": review.version},
        )
    if expected_version is not None and expected_version != review.version:
        raise Conflict(f"review {review_id} changed (version {review.version}, you sent {expected_version}); "
                       "reload it", extra={"status": review.status, "version": review.version})
    if decision == "approve" and reason_code is None and requires_override_reason(review):
        raise InvalidDecision(
            f"approving review {review_id} overrides a {review.max_severity} finding: give a reason_code ("
            + ", ".join(r.code for r in reason_codes_for("approve")) + ")",
            field="reason_code",
        )
    version, now = review.version, utcnow()
    new_status = DECISION_STATUS[decision]
    result = session.execute(
        update(Review)
        .where(Review.id == review_id, Review.version == version, Review.status == "pending")
        .values(status=new_status, decision=decision, reason_code=reason_code, note=note, decided_at=now,
                decided_by=actor, version=version + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise Conflict(f"review {review_id} was decided by someone else a moment ago; reload it")
    overrides = sorted({f.get("rule_id") for f in review.findings or []
                        if decision == "approve" and f.get("severity") in OVERRIDE_SEVERITIES})
    audit_id, audit_hash = audit.append(
        session, actor=actor, action="review.decision", subject=f"review:{review_id}",
        before={"status": "pending", "version": version},
        after={"status": new_status, "version": version + 1, "decision": decision, "reason_code": reason_code,
               "note": note, "decided_at": audit.format_ts(now), "overridden_rules": overrides},
    )
    # bind the row's decision to its entry: `python -m serving.audit verify` names a row that disagrees later
    session.execute(update(Review).where(Review.id == review_id).values(decision_audit_hash=audit_hash)
                    .execution_options(synchronize_session=False))
    session.expire(review)
    session.refresh(review)
    body = review_summary(review)
    body["audit_id"] = audit_id
    return body


# --- override statistics --------------------------------------------------------------------


def override_stats(session: Session, *, since: datetime | date | None = None,
                   until: datetime | date | None = None) -> dict[str, Any]:
    """Per rule id: how often it was shown on a decided review and how often the pharmacist approved anyway.

    ``override_rate`` = overridden / decided (None when not decided yet).  The ``ehr_*`` fields count the
    prescribers' feedback on CDS Hooks cards of the same rule (``POST /cds-services/{id}/feedback``).  Literature reports 49-96% of
    interaction alerts overridden; rules with high rates are candidates for a lower severity or removal.
    """
    decided = Review.status != "pending"
    approved = Review.decision == "approve"
    stmt = (
        select(
            ReviewFinding.rule_id,
            func.min(ReviewFinding.category),
            func.min(ReviewFinding.severity),
            func.count(func.distinct(case((decided, Review.id)))),
            func.count(func.distinct(case((approved, Review.id)))),
            func.count(func.distinct(case((~decided, Review.id)))),
        )
        .join(Review, Review.id == ReviewFinding.review_id)
        .group_by(ReviewFinding.rule_id)
    )
    start, end = to_utc(since), to_utc(until, end_of_day=True)
    if start is not None:
        stmt = stmt.where(Review.created_at >= start)
    if end is not None:
        stmt = stmt.where(Review.created_at <= end)
    rules = []
    for rule_id, category, severity, shown, overridden, pending in session.execute(stmt):
        rules.append({
            "rule_id": rule_id, "category": category, "severity": severity,
            "decided": int(shown), "overridden": int(overridden), "pending": int(pending),
            "override_rate": round(overridden / shown, 4) if shown else None,
        })
    _add_ehr_feedback(session, rules, start, end)
    rules.sort(key=lambda r: (-r["decided"], -(r["override_rate"] or 0), -r["ehr_feedback"], r["rule_id"]))
    total_decided = sum(r["decided"] for r in rules)
    total_overridden = sum(r["overridden"] for r in rules)
    ehr = {k: sum(r[k] for r in rules) for k in ("ehr_feedback", "ehr_overridden", "ehr_accepted")}
    return {
        "rules": rules,
        "total": {"decided": total_decided, "overridden": total_overridden,
                  "override_rate": round(total_overridden / total_decided, 4) if total_decided else None,
                  **ehr, "ehr_override_rate": _rate(ehr["ehr_overridden"], ehr["ehr_feedback"])},
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _add_ehr_feedback(session: Session, rules: list[dict[str, Any]], start, end) -> None:
    """Per rule id: the CDS Hooks cards the EHR sent feedback on (``ehr_feedback``), those overridden by the
    prescriber (``ehr_overridden``) and those whose suggestion was accepted (``ehr_accepted``); counted per card,
    by the card's creation time.  Rules only ever seen in the EHR get a row of their own."""
    overridden = CdsFeedback.outcome == "overridden"
    accepted = CdsFeedback.outcome == "accepted"
    stmt = (
        select(
            CdsCard.rule_id,
            func.min(CdsCard.category),
            func.min(CdsCard.severity),
            func.count(func.distinct(CdsCard.uuid)),
            func.count(func.distinct(case((overridden, CdsCard.uuid)))),
            func.count(func.distinct(case((accepted, CdsCard.uuid)))),
        )
        .join(CdsFeedback, CdsFeedback.card_uuid == CdsCard.uuid)
        .group_by(CdsCard.rule_id)
    )
    if start is not None:
        stmt = stmt.where(CdsCard.created_at >= start)
    if end is not None:
        stmt = stmt.where(CdsCard.created_at <= end)
    by_rule = {r["rule_id"]: r for r in rules}
    for r in rules:
        r.update(ehr_feedback=0, ehr_overridden=0, ehr_accepted=0, ehr_override_rate=None)
    for rule_id, category, severity, cards, n_over, n_acc in session.execute(stmt):
        row = by_rule.get(rule_id)
        if row is None:
            row = by_rule[rule_id] = {"rule_id": rule_id, "category": category, "severity": severity, "decided": 0,
                                      "overridden": 0, "pending": 0, "override_rate": None}
            rules.append(row)
        row.update(ehr_feedback=int(cards), ehr_overridden=int(n_over), ehr_accepted=int(n_acc),
                   ehr_override_rate=_rate(int(n_over), int(cards)))
