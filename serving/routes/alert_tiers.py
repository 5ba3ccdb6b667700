"""Alert tiers, tuned by a pharmacist lead: ``GET``/``PUT /v1/admin/alert-tiers``.

``GET`` (pharmacist, admin): the queue settings in force (which tiers queue per finding category and severity),
their version, who changed them when, the shipped presets and the vocabularies.  ``PUT`` (admin only):
``{"preset": "default"|"strict"}`` or ``{"settings": {"name", "default": [...], "cells": {category: {severity:
[tiers]}}}}``, optional ``expected_version`` (409 when stale) and ``note``.  The change is stored with a
``policy.alert_tiers`` audit entry in one transaction and applied by this process at once, by the others within
``RXT_TIER_SETTINGS_POLL_S``: no restart.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from prescription_check.schemas import Text
from serving import tier_settings
from serving.deps import Admin, DbDep, PharmacistOrAdmin, StateDep
from serving.schemas import error_responses

router = APIRouter(tags=["admin"], responses=error_responses(401, 403, 413, 422, 503))


class AlertTiersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(default=None, max_length=40, description="a shipped preset: default or strict")
    settings: dict[str, Any] | None = Field(
        default=None, description='{"name": "...", "default": ["review"], "cells": {"interaction": {"moderate": '
        '["counsel", "review"]}}}: per category and severity the tiers that queue (counsel, review)')
    expected_version: int | None = Field(default=None, ge=0, description="the version you edited; 409 if it changed")
    note: Text | None = Field(default=None, max_length=500, description="why (kept in the audit entry)")


class AlertTiersOut(BaseModel):
    settings: dict[str, Any]
    version: int
    updated_at: str | None
    updated_by: str | None
    audit_id: int | None
    presets: dict[str, dict[str, Any]]
    categories: list[str]
    severities: list[str]
    tiers: list[str]
    queueable_tiers: list[str]


@router.get("/v1/admin/alert-tiers", response_model=AlertTiersOut, summary="Alert-tier queue settings in force")
async def get_alert_tiers(db: DbDep, principal: PharmacistOrAdmin):
    def read():
        with db.session() as session:
            return tier_settings.describe(tier_settings.read(session))

    return await db.run(read)


@router.put("/v1/admin/alert-tiers", response_model=AlertTiersOut, responses=error_responses(400, 409),
            summary="Change which alert tiers queue, per category and severity (admin; audited; no restart)")
async def put_alert_tiers(body: AlertTiersIn, db: DbDep, state: StateDep, principal: Admin):
    queue = tier_settings.resolve(body.preset, body.settings)
    stored = await db.run(tier_settings.update, db, queue=queue, actor=f"{principal.role}:{principal.key_id}",
                          expected_version=body.expected_version, note=body.note)
    state.checker.apply_queue_settings(stored.queue)
    return tier_settings.describe(stored)
