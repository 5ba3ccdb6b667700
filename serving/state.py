"""The service's runtime state, typed: one ``ServiceState`` per app at ``app.state.rxt``.

Routes never read ``app.state`` themselves: they take the typed dependencies in ``serving.deps``
(``StateDep``, ``SettingsDep``, ``TriageDep``, ``CheckerDep``, ``DbDep``, ``MetricsDep``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from fastapi import Request

from serving.checker_service import CheckerService
from serving.db.session import Database
from serving.metrics import Metrics
from serving.settings import Settings
from serving.triage_service import TriageService

Probe = Callable[[], tuple[bool, str]]


@dataclass
class ServiceState:
    settings: Settings
    api_keys: dict[str, str]
    metrics: Metrics
    triage: TriageService
    checker: CheckerService
    db: Database
    # /readyz: component name -> probe returning (ok, detail); 200 only when every probe is ok
    readiness: dict[str, Probe] = field(default_factory=dict)
    session_secret: str | None = None  # signs the /review page's cookie (set at start-up)
    freeze_gc: bool = False  # freeze the start-up heap out of the cyclic GC (serving.app.lifespan; the entry points)


def get_state(request: Request) -> ServiceState:
    return request.app.state.rxt
