"""The pharmacist lead's alert-tier settings: stored in the review database, audited, applied without a restart.

- ``read(session)`` -> the stored :class:`prescription_check.tiers.QueueSettings` (the shipped ``default`` preset
  when nothing was stored yet) with its version.
- ``update(db, ...)`` validates a preset name or a settings document, writes the row and a ``policy.alert_tiers``
  audit entry (before / after documents) in one transaction; ``expected_version`` makes a stale edit a 409.
- The checker service applies the stored settings at start-up and polls them every ``RXT_TIER_SETTINGS_POLL_S``
  seconds (so every process serving checks follows an edit made through another one); the process that took the
  edit applies it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prescription_check.schemas import CATEGORIES, SEVERITIES
from prescription_check.tiers import PRESETS, QUEUEABLE_TIERS, TIERS, QueueSettings
from serving import audit
from serving.db.models import AlertTierSettings, utcnow
from serving.db.session import Database
from serving.review_queue import Conflict, InvalidDecision

AUDIT_ACTION = "policy.alert_tiers"
AUDIT_SUBJECT = "alert_tier_settings"


@dataclass(frozen=True)
class Stored:
    queue: QueueSettings
    updated_at: str | None = None
    updated_by: str | None = None
    audit_id: int | None = None


def read(session: Session) -> Stored:
    row = session.get(AlertTierSettings, 1)
    if row is None:
        return Stored(PRESETS["default"])
    when = row.updated_at.isoformat() if row.updated_at else None
    return Stored(QueueSettings.from_dict(row.settings, version=row.version), when, row.updated_by, row.audit_id)


def read_version(session: Session) -> int:
    return session.execute(select(AlertTierSettings.version).where(AlertTierSettings.id == 1)).scalar() or 0


def describe(stored: Stored) -> dict[str, Any]:
    """The answer of ``GET /v1/admin/alert-tiers`` (also what the dashboard's form is built from)."""
    return {
        "settings": stored.queue.as_dict(), "version": stored.queue.version, "updated_at": stored.updated_at,
        "updated_by": stored.updated_by, "audit_id": stored.audit_id,
        "presets": {name: q.as_dict() for name, q in PRESETS.items()},
        "categories": list(CATEGORIES), "severities": list(SEVERITIES), "tiers": list(TIERS),
        "queueable_tiers": list(QUEUEABLE_TIERS),
    }


def resolve(preset: str | None, settings: dict | None) -> QueueSettings:
    """A preset name or a settings document -> validated settings; 422 naming the field otherwise."""
    if (preset is None) == (settings is None):
        raise InvalidDecision("give either 'preset' or 'settings'", field="preset")
    if preset is not None:
        if preset not in PRESETS:
            raise InvalidDecision(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}", field="preset")
        return PRESETS[preset]
    try:
        return QueueSettings.from_dict(settings)
    except ValueError as exc:
        raise InvalidDecision(str(exc), field="settings") from None


def update(db: Database, *, queue: QueueSettings, actor: str, expected_version: int | None = None,
           note: str | None = None) -> Stored:
    """Store new settings with their audit entry, in one transaction; 409 when ``expected_version`` is stale (or a
    concurrent first edit won the insert)."""
    try:
        return _update(db, queue=queue, actor=actor, expected_version=expected_version, note=note)
    except IntegrityError:
        raise Conflict("the alert-tier settings were changed at the same moment by someone else; reload them") from None


def _update(db: Database, *, queue: QueueSettings, actor: str, expected_version: int | None,
            note: str | None) -> Stored:
    with db.session() as session:
        row = session.get(AlertTierSettings, 1, with_for_update=True)
        current = 0 if row is None else row.version
        if expected_version is not None and expected_version != current:
            raise Conflict(f"the alert-tier settings changed (version {current}, you sent {expected_version}); "
                           "reload them", extra={"version": current})
        before = PRESETS["default"].as_dict() if row is None else row.settings
        after = queue.as_dict()
        version, now = current + 1, utcnow()
        audit_id = audit.record(session, actor=actor, action=AUDIT_ACTION, subject=AUDIT_SUBJECT,
                                before={"version": current, "settings": before},
                                after={"version": version, "settings": after, "note": note})
        if row is None:
            session.add(AlertTierSettings(id=1, settings=after, version=version, updated_at=now, updated_by=actor,
                                          audit_id=audit_id))
        else:
            row.settings, row.version, row.updated_at, row.updated_by, row.audit_id = after, version, now, actor, audit_id
        session.flush()
        return Stored(QueueSettings.from_dict(after, version=version), now.isoformat(), actor, audit_id)
