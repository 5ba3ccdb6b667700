"""Dependency aliases used by the route modules (FastAPI ``Annotated`` style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.security import Principal, require_roles
from training.config import Settings


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ChatUser = Annotated[Principal, Depends(require_roles("chat", "admin"))]
PrescriberOrPharmacist = Annotated[Principal, Depends(require_roles("prescriber", "pharmacist", "admin"))]
Pharmacist = Annotated[Principal, Depends(require_roles("pharmacist"))]
PharmacistOrAdmin = Annotated[Principal, Depends(require_roles("pharmacist", "admin"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
AdminOrML = Annotated[Principal, Depends(require_roles("admin", "ml"))]
