"""Holds the triage classifier the service answers with, and swaps it atomically.

- ``load()`` / ``reload()`` build a new ``TriageClassifier`` from the configured URI (by default
  ``models:/triage-classifier@champion``), check it (its labels must be centers of the served
  taxonomy, and one prediction must run), and only then replace the reference.  A failed reload
  (missing, corrupt or incompatible artifact) keeps the old model and returns why.
- The swap is one reference assignment.  A micro-batch takes the reference once when it starts
  (``holder.model``) and finishes on that object, so in-flight requests finish on the old model
  while new batches use the new one; the old model is freed when its last batch ends.
- ``poll_once()`` asks the registry which version the alias points at now and reloads when it
  changed (used by the polling task when ``settings.model_poll_seconds > 0``).  A version that
  failed to load is not retried until the alias moves again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from serving.logs import SERVICE_LOGGER, log_event
from training.config import Settings

log = logging.getLogger(SERVICE_LOGGER)


@dataclass(frozen=True)
class ReloadResult:
    previous_version: str | None
    current_version: str | None
    reloaded: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_alias_uri(uri: str) -> tuple[str, str] | None:
    """``models:/name@alias`` -> (name, alias); anything else (a path, a fixed version) -> None."""
    if not uri.startswith("models:/"):
        return None
    spec = uri[len("models:/") :]
    if "@" not in spec:
        return None
    name, alias = spec.split("@", 1)
    return (name, alias) if name and alias else None


SERVING_INTRA_OP_THREADS = 2


def _default_loader(uri: str, settings: Settings):
    from triage.classifier import TriageClassifier

    # no busy-wait spinning of onnxruntime's idle worker threads by default: on a small machine it burns
    # the CPU that the event loop (HTTP parsing, red-flag rules) needs (+24% req/s at c=8, docs/serving.md)
    return TriageClassifier.load(uri, settings=settings, intra_op_threads=SERVING_INTRA_OP_THREADS,
                                 spinning=settings.ort_spinning)


def model_version_of(model: Any) -> str:
    """The registry version, or ``local:<folder>`` for a model loaded from a plain path."""
    version = getattr(model, "version", None)
    if version is not None:
        return str(version)
    folder = getattr(model, "folder", None)
    return f"local:{getattr(folder, 'name', 'model')}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:1000]


class ModelHolder:
    def __init__(
        self,
        settings: Settings,
        uri: str | None = None,
        loader: Callable[[str, Settings], Any] | None = None,
        taxonomy: Any | None = None,
        on_change: Callable[[Any], None] | None = None,
    ) -> None:
        self.settings = settings
        self.uri = uri or settings.triage_model_uri
        self._loader = loader or _default_loader
        self._taxonomy = taxonomy
        self._on_change = on_change
        self._model: Any | None = None
        self._reload_lock = threading.Lock()
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        self._failed_alias_version: str | None = None

    # -- state -------------------------------------------------------------------------------
    @property
    def model(self) -> Any | None:
        """The classifier serving now (take it once per batch; never re-read mid-batch)."""
        return self._model

    @property
    def version(self) -> str | None:
        model = self._model
        return None if model is None else model_version_of(model)

    def is_ready(self) -> tuple[bool, str]:
        model = self._model
        if model is None:
            return False, f"not loaded ({self.uri}): {self.last_error or 'loading'}"
        return True, f"version {model_version_of(model)} from {self.uri}"

    # -- loading -----------------------------------------------------------------------------
    def _check(self, model: Any) -> None:
        """Reject an artifact this service cannot answer with (raises ValueError naming why)."""
        labels = list(getattr(model, "labels", []) or [])
        if not labels:
            raise ValueError("the model has no labels")
        if self._taxonomy is not None:
            unknown = []
            for label in labels:
                try:
                    center = self._taxonomy.get(label)
                except KeyError:
                    center = None
                if center is None:
                    unknown.append(label)
            if unknown:
                raise ValueError(
                    f"incompatible model: labels {unknown[:10]} are not centers of taxonomy "
                    f"{getattr(self._taxonomy, 'version', '?')} (model taxonomy "
                    f"{getattr(model, 'taxonomy_version', '?')})"
                )
        predictions = model.predict(["I have had a headache since yesterday"])
        if len(predictions) != 1 or not predictions[0].centers:
            raise ValueError("the model's smoke prediction returned no centers")

    def reload(self, uri: str | None = None) -> ReloadResult:
        """Load ``uri`` (default: the configured one); swap only if it loads and checks out."""
        uri = uri or self.uri
        with self._reload_lock:
            previous = self.version
            started = time.perf_counter()
            try:
                new = self._loader(uri, self.settings)
                self._check(new)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old model
                self.last_error = _describe(exc)
                log_event(
                    log, "triage model load failed; keeping the previous model",
                    level=logging.WARNING, uri=uri, previous_version=previous, error=self.last_error,
                )
                return ReloadResult(previous, previous, False, self.last_error)
            self._model = new  # the atomic swap
            self.last_error = None
            self.loaded_at = time.time()
            self._failed_alias_version = None
            if self._on_change is not None:
                self._on_change(new)
            log_event(
                log, "triage model loaded", uri=uri, previous_version=previous,
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
        from training.registry import configure, get_alias_version

        configure(self.settings)
        target = get_alias_version(*alias)
        if target is None or target == self.version or target == self._failed_alias_version:
            return None
        result = self.reload()
        if not result.reloaded:
            self._failed_alias_version = target
        return result
