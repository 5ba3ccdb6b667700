"""The shadow challenger: ``@challenger`` scored beside ``@champion`` on a fraction of live requests, off the
answering path (issue 15).

- With ``RXT_SHADOW_FRACTION > 0`` the service loads ``RXT_CHALLENGER_MODEL_URI`` (default
  ``models:/triage-classifier@challenger``) in its own :class:`serving.model_holder.ModelHolder` (a missing alias
  or a broken artefact leaves shadow scoring idle and says why in the log; the service stays ready).
- After the answer is shaped, ``offer()`` draws a random number and, for the chosen fraction, puts the text and the
  champion's ranking on a bounded queue (``put_nowait``: a full queue drops the shadow work and counts it in
  ``rxt_shadow_dropped_total{reason="queue_full"}``; the answer never waits).
- One worker thread, at the lowest CPU priority (``nice 19`` for that thread only), runs the challenger with
  ``RXT_SHADOW_THREADS`` onnxruntime threads on micro-batches of what is queued and hands one
  :class:`serving.feedback.ShadowRow` per request (both versions, both top centers and confidences, agreement) to
  the feedback writer, which stores it beside the answer's record (``shadow_scores``).  Outcomes recorded later
  give both models' live accuracy (``python -m training compare triage --live``).
- The challenger sees the same text; red-flag rules and urgency are the champion's (rules do not change with the
  model), so only the routing is compared.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any, Callable

from serving.components import load_triage_classifier
from serving.feedback import ShadowRow
from serving.logs import SERVICE_LOGGER, log_event
from serving.metrics import Metrics
from serving.model_holder import ModelHolder, model_version_of
from serving.settings import Settings

log = logging.getLogger(SERVICE_LOGGER)

SHADOW_BATCH = 16


def _challenger_loader(uri: str, settings: Settings):
    return load_triage_classifier(uri, settings, intra_op_threads=settings.shadow_threads)


class ShadowScorer:
    def __init__(self, settings: Settings, metrics: Metrics, taxonomy: Any | None,
                 sink: Callable[[ShadowRow], bool] | None = None,
                 loader: Callable[[str, Settings], Any] | None = None, seed: int | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.fraction = float(settings.shadow_fraction)
        self.sink = sink
        self.holder = ModelHolder(settings, uri=settings.challenger_model_uri, loader=loader or _challenger_loader,
                                  taxonomy=taxonomy, name="challenger",
                                  on_change=lambda m: metrics.set_challenger(model_version_of(m)))
        self._queue: queue.Queue = queue.Queue(maxsize=settings.shadow_queue)
        self._random = random.Random(seed)
        self._agree: deque = deque(maxlen=settings.monitor_window)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def load(self) -> None:
        """Load the challenger (start-up, in a worker thread); a failure only idles shadow scoring."""
        if self.enabled:
            result = self.holder.load()
            if not result.reloaded:
                log_event(log, "shadow scoring idle: no challenger loaded", level=logging.WARNING,
                          uri=self.holder.uri, error=result.error)

    def poll_once(self):
        return self.holder.poll_once() if self.enabled else None

    def status(self) -> dict:
        return {"enabled": self.enabled, "fraction": self.fraction, "challenger_version": self.holder.version,
                "uri": self.holder.uri, "queued": self._queue.qsize(), "error": self.holder.last_error}

    # --- answering path: a random draw and a put_nowait, nothing else ---------------------------------------
    def offer(self, request_id: str, text: str, outcome: Any) -> bool:
        if not self.enabled or self.holder.model is None or self._thread is None:
            return False
        if self._random.random() >= self.fraction:
            return False
        try:
            self._queue.put_nowait((request_id, text, outcome))
            return True
        except queue.Full:
            self.metrics.shadow_dropped.labels(reason="queue_full").inc()
            return False

    # --- the worker ------------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rxt-shadow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        try:  # this thread only (Linux: a thread is a task): the answering threads keep their priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            items = [first]
            while len(items) < SHADOW_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._score(items)
            except Exception as exc:  # noqa: BLE001 - shadow work never takes anything down
                self.metrics.shadow_dropped.labels(reason="error").inc(len(items))
                log_event(log, "shadow scoring failed", level=logging.WARNING, error=exc.__class__.__name__)
            finally:
                for _ in items:
                    self._queue.task_done()

    def _score(self, items: list[tuple[str, str, Any]]) -> None:
        model = self.holder.model
        if model is None:
            self.metrics.shadow_dropped.labels(reason="no_challenger").inc(len(items))
            return
        version = model_version_of(model)
        predictions = model.predict([text for _, text, _ in items])
        now = datetime.now(UTC)
        for (request_id, _, champion), pred in zip(items, predictions):
            c_center, c_conf = champion.centers[0]
            s_center, s_conf = pred.centers[0]
            agree = c_center == s_center
            self._agree.append(agree)
            row = ShadowRow(request_id=request_id, scored_at=now, champion_version=str(champion.model_version),
                            challenger_version=version, champion_center=str(c_center), challenger_center=str(s_center),
                            champion_confidence=float(c_conf), challenger_confidence=float(s_conf),
                            champion_abstained=bool(champion.abstained), challenger_abstained=bool(pred.abstained),
                            agree=agree)
            if self.sink is not None:
                self.sink(row)
        self.metrics.shadow_scored.inc(len(items))
        self.metrics.shadow_agreement.set(sum(self._agree) / len(self._agree))
