"""Swap the prescription checker's DDI risk model without a restart.

The checker (``app.state.checker``) is immutable once published; a reload builds a new ``Checker`` on
the same knowledge base with the newly loaded ``DDIPredictor`` and replaces the reference in one
assignment.  A check already running keeps the checker it started with.  A reload that fails (no
registered version, damaged artefact, a smoke prediction that does not run) keeps the current checker
and says why.  ``poll_once`` reloads when the registry alias points at another version.
"""

from __future__ import annotations

import logging
import threading
import time

from fastapi import FastAPI

from serving.logs import SERVICE_LOGGER, log_event
from serving.model_holder import ReloadResult, parse_alias_uri

log = logging.getLogger(SERVICE_LOGGER)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:1000]


class DDIReloader:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._failed_alias_version: str | None = None

    @property
    def uri(self) -> str:
        return self.app.state.settings.ddi_model_uri

    def current_version(self) -> str | None:
        checker = getattr(self.app.state, "checker", None)
        return None if checker is None else checker.model_version

    def reload(self) -> ReloadResult:
        from prescription_check import Checker
        from prescription_check.ddi_model import DDIPredictor

        with self._lock:
            checker = getattr(self.app.state, "checker", None)
            if checker is None:
                error = getattr(self.app.state, "checker_error", None) or "prescription checker is not loaded"
                return ReloadResult(None, None, False, error)
            previous = checker.model_version
            started = time.perf_counter()
            try:
                predictor = DDIPredictor.load(self.uri, settings=self.app.state.settings)
                known = [n for n in predictor.names if predictor.in_training_data(n)][:2]
                if len(known) == 2 and not predictor.predict_pairs([tuple(known)])[0]:
                    raise ValueError("the model's smoke prediction returned nothing")
            except Exception as exc:  # noqa: BLE001 - any failure keeps the current checker
                error = _describe(exc)
                log_event(log, "ddi model load failed; keeping the previous model", level=logging.WARNING,
                          uri=self.uri, previous_version=previous, error=error)
                return ReloadResult(previous, previous, False, error)
            self.app.state.checker = Checker(checker.kb, checker.policy, predictor)  # the atomic swap
            self._failed_alias_version = None
            log_event(log, "ddi model loaded", uri=self.uri, previous_version=previous,
                      version=predictor.version, seconds=round(time.perf_counter() - started, 3))
            return ReloadResult(previous, predictor.version, True, None)

    def poll_once(self) -> ReloadResult | None:
        alias = parse_alias_uri(self.uri)
        if alias is None or getattr(self.app.state, "checker", None) is None:
            return None
        from training.registry import configure, get_alias_version

        configure(self.app.state.settings)
        target = get_alias_version(*alias)
        if target is None or target == self.current_version() or target == self._failed_alias_version:
            return None
        result = self.reload()
        if not result.reloaded:
            self._failed_alias_version = target
        return result
