"""Review-queue storage: ORM models, engines/sessions and Alembic migrations (see docs/review-queue.md)."""

from serving.db.models import (
    AuditChainHead,
    AuditEntryRow,
    Base,
    CdsCard,
    CdsFeedback,
    CdsJwtId,
    CheckIdempotencyKey,
    IdempotencyKey,
    RevokedSession,
    Review,
    ReviewFinding,
)
from serving.db.session import Database, DatabaseUnavailable, make_engine, upgrade

__all__ = [
    "AuditChainHead",
    "AuditEntryRow",
    "Base",
    "CdsCard",
    "CdsFeedback",
    "CdsJwtId",
    "CheckIdempotencyKey",
    "Database",
    "DatabaseUnavailable",
    "IdempotencyKey",
    "Review",
    "ReviewFinding",
    "RevokedSession",
    "make_engine",
    "upgrade",
]
