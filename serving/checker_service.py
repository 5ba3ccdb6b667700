"""The prescription checker the service answers with, and its DDI risk model, swapped without a restart.

``CheckerService.load()`` loads the KB artefact into a rules-only :class:`prescription_check.Checker`
(``serving.components.load_checker``), then the DDI model through a :class:`serving.model_holder.ModelHolder`;
every successful DDI (re)load publishes a new immutable ``Checker`` on the same knowledge base in one reference
assignment, so a check already running keeps the checker it started with.  Without a model the checker runs
rules-only and says why in ``model_status`` (and ``/readyz`` reports ``degraded: rules-only: <why>``).
A checker given to the constructor (tests, benchmarks) is used as it is.
"""

from __future__ import annotations

import logging

from prescription_check import Checker
from prescription_check.tiers import QueueSettings
from serving import tier_settings
from serving.components import load_checker, load_ddi_predictor
from serving.logs import SERVICE_LOGGER
from serving.model_holder import ModelHolder, ReloadResult, describe_error
from serving.settings import Settings

log = logging.getLogger(SERVICE_LOGGER)


class CheckerUnavailable(RuntimeError):
    """The prescription checker is not loaded (the message says why); checks answer 503."""


def ddi_smoke_check(predictor) -> None:
    known = [n for n in predictor.names if predictor.in_training_data(n)][:2]
    if len(known) == 2 and not predictor.predict_pairs([tuple(known)])[0]:
        raise ValueError("the model's smoke prediction returned nothing")


class CheckerService:
    def __init__(self, settings: Settings, checker: Checker | None = None) -> None:
        self.settings = settings
        self._injected = checker is not None
        self.current: Checker | None = checker
        self.error: str | None = None
        self.queue: QueueSettings | None = None  # the lead's alert-tier settings (serving.tier_settings)
        self.ddi = ModelHolder(settings, uri=settings.ddi_model_uri, loader=load_ddi_predictor, name="ddi",
                               check=ddi_smoke_check, on_change=self._publish)

    def _publish(self, predictor) -> None:
        base = self.current
        if base is None:
            raise CheckerUnavailable(self.error or "prescription checker is not loaded")
        self.current = Checker(base.kb, base.policy, predictor)  # the atomic swap

    def load(self) -> None:
        if self._injected:
            return
        try:
            base = load_checker(self.settings, model_status="rules-only: DDI model loading")
        except Exception as exc:  # noqa: BLE001 - reported through readiness and 503s, never hidden
            self.error = f"prescription checker failed to load: {describe_error(exc)}"
            log.error("%s", self.error)
            return
        self.current, self.error = base, None
        if not self.ddi.load().reloaded:
            self.current = Checker(base.kb, base.policy, None, f"rules-only: {self.ddi.last_error}")
        if self.queue is not None:
            self.apply_queue_settings(self.queue)

    # -- alert tiers -------------------------------------------------------------------------
    def apply_queue_settings(self, queue: QueueSettings) -> None:
        """Publish a checker with the lead's queue settings (same KB and model): one reference assignment, so a
        check already running finishes under the settings it started with."""
        self.queue = queue
        base = self.current
        if base is not None:
            self.current = Checker(base.kb, base.policy.with_queue_settings(queue), base.ddi, base.model_status)

    def refresh_queue_settings(self, db) -> bool:
        """Apply the stored settings when their version differs from the applied one (blocking; database work)."""
        from_version = self.queue.version if self.queue is not None else -1
        with db.session() as session:
            if tier_settings.read_version(session) == from_version:
                return False
            stored = tier_settings.read(session)
        self.apply_queue_settings(stored.queue)
        return True

    def require(self) -> Checker:
        checker = self.current
        if checker is None:
            raise CheckerUnavailable(self.error or "prescription checker is not loaded yet")
        return checker

    def reload_ddi(self) -> ReloadResult:
        if self.current is None:
            return ReloadResult(None, None, False, self.error or "prescription checker is not loaded")
        previous = self.current.model_version
        result = self.ddi.reload()
        return ReloadResult(previous, self.current.model_version, result.reloaded, result.error)

    def poll_ddi(self) -> ReloadResult | None:
        if self.current is None:
            return None
        return self.ddi.poll_once()

    # -- readiness ---------------------------------------------------------------------------
    def kb_ready(self) -> tuple[bool, str]:
        checker = self.current
        if checker is None:
            return False, self.error or "prescription checker not loaded"
        return True, f"kb {checker.kb_version}"

    def ddi_ready(self) -> tuple[bool, str]:
        # rules-only is a supported, degraded mode: ready, and the detail says so (each check response repeats
        # it in model_status)
        checker = self.current
        if checker is None:
            return False, "prescription checker not loaded"
        if checker.ddi is None:
            failed = self.ddi.last_error if self.ddi.last_failed_at is not None and not self._injected else None
            tail = f"; last reload failed: {failed}" if failed and failed not in checker.model_status else ""
            return True, f"degraded: {checker.model_status}{tail}"
        return True, f"ddi-severity {checker.model_version or '?'}{self.ddi.reload_failure()}"
