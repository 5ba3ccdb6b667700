"""ORM models of the review queue and the audit log (SQLAlchemy 2, typed declarative).

Portable between SQLite (embedded default) and PostgreSQL: plain strings with CHECK constraints instead
of native enums, ``JSON`` columns for documents, and timestamps stored timezone-aware (UTC).

Tables
- ``reviews``: one flagged prescription check waiting for (or decided by) a pharmacist. ``version`` is the
  optimistic-locking counter: a decision is ``UPDATE ... WHERE id = :id AND version = :v AND status =
  'pending'``, so of two concurrent deciders exactly one changes the row.
- ``review_findings``: one row per finding of a review (rule id, category, severity), so that override
  statistics per rule are a SQL aggregate.
- ``idempotency_keys``: the first answer given to a decision request carrying an ``Idempotency-Key``;
  ``check_idempotency_keys`` the same for prescription checks.
- ``revoked_sessions``: /review sessions ended by a sign-out.
- ``cds_cards``, ``cds_feedback``, ``cds_jwt_ids``: CDS Hooks cards (uuid -> rule id), the EHR's feedback on them, and
  the JWT ids seen (replay protection); see ``serving.cds_hooks``.
- ``audit_log`` + ``audit_chain_head``: the append-only, hash-chained audit trail (see ``serving.audit``).
- ``triage_records``, ``triage_outcomes``, ``shadow_scores``: triage answers, their outcomes and the shadow
  challenger's scores (``serving.feedback``, ``serving.shadow``; docs/lifecycle.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from prescription_check.schemas import SEVERITIES
from triage.taxonomy import URGENCY_LEVELS

STATUSES: tuple[str, ...] = ("pending", "approved", "rejected", "changes_requested")
DECISIONS: tuple[str, ...] = ("approve", "reject", "request_change")
DECISION_STATUS: dict[str, str] = {
    "approve": "approved",
    "reject": "rejected",
    "request_change": "changes_requested",
}
GENESIS_HASH = "0" * 64


def utcnow() -> datetime:
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="ck_reviews_status"),
        CheckConstraint(_in("verdict", ("pass", "review", "block")), name="ck_reviews_verdict"),
        CheckConstraint(_in("max_severity", SEVERITIES), name="ck_reviews_max_severity"),
        CheckConstraint(f"decision IS NULL OR {_in('decision', DECISIONS)}", name="ck_reviews_decision"),
        Index("ix_reviews_queue", "status", "severity_rank", "created_at", "id"),
        Index("ix_reviews_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    submitted_by: Mapped[str] = mapped_column(String(200))  # "<role>:<key fingerprint>"
    prescription_ref: Mapped[str | None] = mapped_column(String(200))  # the caller's prescription id
    prescriber_id: Mapped[str | None] = mapped_column(String(200))
    prescription: Mapped[dict[str, Any]] = mapped_column(JSON)  # the prescription as submitted (items)
    patient: Mapped[dict[str, Any]] = mapped_column(JSON)  # patient context as submitted
    findings: Mapped[list[Any]] = mapped_column(JSON)  # the checker's findings, most severe first
    normalized_items: Mapped[list[Any]] = mapped_column(JSON, default=list)
    verdict: Mapped[str] = mapped_column(String(16))
    max_severity: Mapped[str] = mapped_column(String(16))
    severity_rank: Mapped[int] = mapped_column(Integer)  # SEVERITY_RANK[max_severity], for ordering
    kb_version: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(100))
    model_status: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(24), default="pending")
    decision: Mapped[str | None] = mapped_column(String(24))
    reason_code: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # hash of the review.decision audit entry written with the decision (serving.audit.verify_reviews)
    decision_audit_hash: Mapped[str | None] = mapped_column(String(64))

    finding_rows: Mapped[list[ReviewFinding]] = relationship(
        back_populates="review", cascade="all, delete-orphan", order_by="ReviewFinding.id"
    )


class ReviewFinding(Base):
    __tablename__ = "review_findings"
    __table_args__ = (Index("ix_review_findings_rule", "rule_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"), index=True)
    rule_id: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))

    review: Mapped[Review] = relationship(back_populates="finding_rows")


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CheckIdempotencyKey(Base):
    """The first answer to ``POST /v1/prescriptions/check`` carrying an ``Idempotency-Key``."""

    __tablename__ = "check_idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    audit_id: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RevokedSession(Base):
    """A /review session id ended by a sign-out: its cookie is refused until it would have expired anyway."""

    __tablename__ = "revoked_sessions"
    __table_args__ = (Index("ix_revoked_sessions_expires_at", "expires_at"),)

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEntryRow(Base):
    """One audit entry.  ``ts``, ``before_json`` and ``after_json`` are stored as the exact text that was
    hashed (canonical JSON / ISO-8601), so verification never depends on a driver's round trip."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_subject", "subject"),
        Index("ix_audit_log_action", "action"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(300))
    before_json: Mapped[str | None] = mapped_column(Text)
    after_json: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)  # unique: the chain cannot fork
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditChainHead(Base):
    """A single row (id = 1): the last entry's id and hash.  Appends lock it, which serialises them."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="ck_audit_chain_head_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class AlertTierSettings(Base):
    """One row (id = 1) when a pharmacist lead has tuned the alert tiers: which tiers queue, per category and
    severity (``prescription_check.tiers.QueueSettings.as_dict``).  No row: the shipped ``default`` preset.
    Every change is a ``policy.alert_tiers`` audit entry; ``version`` guards concurrent edits."""

    __tablename__ = "alert_tier_settings"
    __table_args__ = (CheckConstraint("id = 1", name="ck_alert_tier_settings_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))
    audit_id: Mapped[int] = mapped_column(Integer)
class CdsCard(Base):
    """A card answered by a CDS Hooks service (``serving.cds_hooks``): its uuid resolves back to the rule that fired
    it, so feedback from the EHR (accepted / overridden) counts against that rule."""

    __tablename__ = "cds_cards"
    __table_args__ = (
        Index("ix_cds_cards_rule", "rule_id"),
        Index("ix_cds_cards_hook_instance", "hook_instance"),
    )

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    service_id: Mapped[str] = mapped_column(String(64))
    hook_instance: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(300))  # "cds:<iss>" or "<role>:<key fingerprint>"
    rule_id: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))
    indicator: Mapped[str] = mapped_column(String(16))
    drugs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    order_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)  # MedicationRequest/<id> the card is about
    suggestion_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    audit_id: Mapped[int] = mapped_column(Integer)  # the cds.hook audit entry that answered the card


class CdsFeedback(Base):
    """One feedback entry for a card (``POST /cds-services/{id}/feedback``).  The same entry sent twice (same card,
    outcome and outcomeTimestamp) is stored once."""

    __tablename__ = "cds_feedback"
    __table_args__ = (
        CheckConstraint(_in("outcome", ("accepted", "overridden")), name="ck_cds_feedback_outcome"),
        UniqueConstraint("card_uuid", "outcome", "outcome_timestamp", name="uq_cds_feedback_entry"),
        Index("ix_cds_feedback_card", "card_uuid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_uuid: Mapped[str] = mapped_column(ForeignKey("cds_cards.uuid", ondelete="CASCADE"))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(16))
    outcome_timestamp: Mapped[str] = mapped_column(String(40))
    accepted_suggestions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    reason_system: Mapped[str | None] = mapped_column(String(300))
    reason_code: Mapped[str | None] = mapped_column(String(200))
    user_comment: Mapped[str | None] = mapped_column(Text)
    audit_id: Mapped[int] = mapped_column(Integer)


class CdsJwtId(Base):
    """The ``jti`` of every CDS client JWT accepted so far (per issuer), kept until the token expires: a token seen
    twice is a replay, whichever replica saw it first."""

    __tablename__ = "cds_jwt_ids"
    __table_args__ = (Index("ix_cds_jwt_ids_expires_at", "expires_at"),)

    iss: Mapped[str] = mapped_column(String(300), primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
# --- triage feedback (issue 15): answers, outcomes, shadow scores -------------------------------------------


class TriageRecord(Base):
    """One ``POST /v1/triage`` answer, kept so an outcome can be matched to it (``serving.feedback``).

    ``text`` is set only when the deployment keeps texts (RXT_FEEDBACK_KEEP_TEXT) and the request carried
    ``feedback_consent: true``; otherwise only ``text_sha256``.  ``sketch`` is a 16-number random projection of
    the champion's pooled embedding (drift monitoring), not the embedding itself.  The purge deletes texts and
    sketches past RXT_FEEDBACK_RETENTION_DAYS."""

    __tablename__ = "triage_records"
    __table_args__ = (Index("ix_triage_records_created_at", "created_at"),)

    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model_version: Mapped[str] = mapped_column(String(100))
    taxonomy_version: Mapped[str | None] = mapped_column(String(50))
    text_sha256: Mapped[str] = mapped_column(String(64))
    text_chars: Mapped[int] = mapped_column(Integer)
    latin_share: Mapped[float] = mapped_column(Float)
    language: Mapped[str | None] = mapped_column(String(8))  # as declared by the caller
    consent: Mapped[bool] = mapped_column(Boolean, default=False)
    text: Mapped[str | None] = mapped_column(Text)
    predicted_center: Mapped[str] = mapped_column(String(64))  # the model's top center
    confidence: Mapped[float] = mapped_column(Float)  # its calibrated probability
    answered_center: Mapped[str] = mapped_column(String(64))  # first center of the answer (emergency override)
    urgency: Mapped[str] = mapped_column(String(16))
    abstained: Mapped[bool] = mapped_column(Boolean)
    red_flags: Mapped[int] = mapped_column(Integer, default=0)
    sketch: Mapped[list[Any] | None] = mapped_column(JSON)
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TriageOutcome(Base):
    """Where the patient was actually seen (and the urgency a clinician assigned) for one triage answer."""

    __tablename__ = "triage_outcomes"
    __table_args__ = (
        CheckConstraint(f"clinician_urgency IS NULL OR {_in('clinician_urgency', URGENCY_LEVELS)}",
                        name="ck_triage_outcomes_urgency"),
        Index("ix_triage_outcomes_recorded_at", "recorded_at"),
    )

    request_id: Mapped[str] = mapped_column(ForeignKey("triage_records.request_id", ondelete="CASCADE"),
                                            primary_key=True)
    actual_center: Mapped[str] = mapped_column(String(64))
    clinician_urgency: Mapped[str | None] = mapped_column(String(16))
    body_sha256: Mapped[str] = mapped_column(String(64))  # idempotency: same body -> same answer, else 409
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(200))


class ShadowScore(Base):
    """The challenger's opinion on one live request, scored off the answering path (``serving.shadow``)."""

    __tablename__ = "shadow_scores"
    __table_args__ = (Index("ix_shadow_scores_versions", "challenger_version", "champion_version"),)

    request_id: Mapped[str] = mapped_column(ForeignKey("triage_records.request_id", ondelete="CASCADE"),
                                            primary_key=True)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    champion_version: Mapped[str] = mapped_column(String(100))
    challenger_version: Mapped[str] = mapped_column(String(100))
    champion_center: Mapped[str] = mapped_column(String(64))
    challenger_center: Mapped[str] = mapped_column(String(64))
    champion_confidence: Mapped[float] = mapped_column(Float)
    challenger_confidence: Mapped[float] = mapped_column(Float)
    champion_abstained: Mapped[bool] = mapped_column(Boolean)
    challenger_abstained: Mapped[bool] = mapped_column(Boolean)
    agree: Mapped[bool] = mapped_column(Boolean)
