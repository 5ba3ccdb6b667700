"""One reloadable-model holder for every model the service serves (triage classifier, DDI risk model).

- ``load()`` / ``reload()`` build a new model from the configured URI with the holder's ``loader``, run its
  ``check`` (a smoke prediction; for triage also: its labels must be centers of the served taxonomy), and only
  then replace the reference and call ``on_change``.  A failed reload (missing, corrupt or incompatible
  artifact) keeps the old model and returns why (``last_error``).
- The swap is one reference assignment.  A caller takes the reference once (``holder.model``) and finishes on
  that object, so work in flight finishes on the old model while new work uses the new one.
- ``poll_once()`` asks the registry which version the alias points at now and reloads when it changed (the
  polling task runs it when ``settings.model_poll_seconds > 0``).  A version that failed to load is not
  retried until the alias moves again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from serving import registry
from serving.components import load_triage_classifier
from serving.logs import SERVICE_LOGGER, log_event
from serving.registry import parse_alias_uri
from serving.settings import Settings

__all__ = ["ModelHolder", "ReloadResult", "check_labels", "check_smoke", "describe_error", "model_version_of",
           "parse_alias_uri", "triage_check"]

log = logging.getLogger(SERVICE_LOGGER)


@dataclass(frozen=True)
class ReloadResult:
    previous_version: str | None
    current_version: str | None
    reloaded: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_version_of(model: Any) -> str:
    """The registry version, or ``local:<folder>`` for a model loaded from a plain path."""
    version = getattr(model, "version", None)
    if version is not None:
        return str(version)
    folder = getattr(model, "folder", None) or getattr(model, "model_dir", None)
    return f"local:{getattr(folder, 'name', 'model')}"


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:1000]


SMOKE_TEXT = "I have had a headache since yesterday"


def check_labels(model: Any, taxonomy: Any | None) -> None:
    """The model's labels must be centers of the served taxonomy (raises ValueError naming the strangers)."""
    labels = list(getattr(model, "labels", []) or [])
    if not labels:
        raise ValueError("the model has no labels")
    if taxonomy is not None:
        unknown = [label for label in labels if label not in taxonomy]
        if unknown:
            raise ValueError(
                f"incompatible model: labels {unknown[:10]} are not centers of taxonomy "
                f"{getattr(taxonomy, 'version', '?')} (model taxonomy {getattr(model, 'taxonomy_version', '?')})"
            )


def check_smoke(model: Any) -> None:
    predictions = model.predict([SMOKE_TEXT])
    if len(predictions) != 1 or not predictions[0].centers:
        raise ValueError("the model's smoke prediction returned no centers")


def triage_check(taxonomy: Any | None) -> Callable[[Any], None]:
    """Reject a triage classifier this service cannot answer with (raises ValueError naming why)."""

    def check(model: Any) -> None:
        check_labels(model, taxonomy)
        check_smoke(model)

    return check


def _default_triage_loader(uri: str, settings: Settings):

    return load_triage_classifier(uri, settings)


class ModelHolder:
    def __init__(
        self,
        settings: Settings,
        uri: str | None = None,
        loader: Callable[[str, Settings], Any] | None = None,
        taxonomy: Any | None = None,
        on_change: Callable[[Any], None] | None = None,
        *,
        name: str = "triage",
        check: Callable[[Any], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.uri = uri or settings.triage_model_uri
        self._loader = loader or _default_triage_loader
        self._check = check or triage_check(taxonomy)
        self._on_change = on_change
        self._model: Any | None = None
        self._reload_lock = threading.Lock()
        self.last_error: str | None = None
        self.last_failed_at: float | None = None
        self.loaded_at: float | None = None
        self._failed_alias_version: str | None = None

    # -- state -------------------------------------------------------------------------------
    @property
    def model(self) -> Any | None:
        """The model serving now (take it once per unit of work; never re-read midway)."""
        return self._model

    @property
    def version(self) -> str | None:
        model = self._model
        return None if model is None else model_version_of(model)

    def is_ready(self) -> tuple[bool, str]:
        model = self._model
        if model is None:
            return False, f"not loaded ({self.uri}): {self.last_error or 'loading'}"
        return True, f"version {model_version_of(model)} from {self.uri}{self.reload_failure()}"

    def reload_failure(self) -> str:
        """``"; last reload failed at <UTC time>: <why> (still serving the previous model)"`` after a failed
        reload, until the next one succeeds; else ``""``.  Readiness stays ok (the old model still answers), but
        the failure is visible in /readyz."""
        if self.last_error is None or self.last_failed_at is None or self._model is None:
            return ""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_failed_at))
        return f"; last reload failed at {when}: {self.last_error} (still serving the previous model)"

    # -- loading -----------------------------------------------------------------------------
    def reload(self, uri: str | None = None) -> ReloadResult:
        """Load ``uri`` (default: the configured one); swap only if it loads and checks out."""
        uri = uri or self.uri
        with self._reload_lock:
            previous = self.version
            started = time.perf_counter()
            try:
                new = self._loader(uri, self.settings)
                self._check(new)
                if self._on_change is not None:
                    self._on_change(new)  # publishes derived state (e.g. a new checker); may refuse
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old model
                self.last_error = describe_error(exc)
                self.last_failed_at = time.time()
                log_event(
                    log, f"{self.name} model load failed; keeping the previous model",
                    level=logging.WARNING, uri=uri, previous_version=previous, error=self.last_error,
                )
                return ReloadResult(previous, previous, False, self.last_error)
            self._model = new  # the atomic swap
            self.last_error = None
            self.loaded_at = time.time()
            self._failed_alias_version = None
            log_event(
                log, f"{self.name} model loaded", uri=uri, previous_version=previous,
                version=model_version_of(new), taxonomy_version=str(getattr(new, "taxonomy_version", None)),
                seconds=round(time.perf_counter() - started, 3),
            )
            return ReloadResult(previous, model_version_of(new), True, None)

    load = reload

    def poll_once(self) -> ReloadResult | None:
        """Reload when the registry alias now points at another version; None when nothing to do."""
        alias = parse_alias_uri(self.uri)
        if alias is None:
            return None
        registry.configure(self.settings)
        target = registry.get_alias_version(*alias)
        model = self._model
        current = getattr(model, "registry_version", None) or self.version  # a quick model's is "<v>+quick"
        if target is None or target == current or target == self._failed_alias_version:
            return None
        result = self.reload()
        if not result.reloaded:
            self._failed_alias_version = target
        return result
