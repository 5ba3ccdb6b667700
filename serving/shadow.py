"""The shadow challenger: ``@challenger`` scored beside ``@champion`` on a fraction of live requests, off the
answering path (issue 15), in its own process so that it cannot slow the answers.

- With ``RXT_SHADOW_FRACTION > 0`` the service starts one scorer process (:mod:`serving.shadow_worker`) per service
  worker and has it load ``RXT_CHALLENGER_MODEL_URI`` (default ``models:/triage-classifier@challenger``) through a
  :class:`serving.model_holder.ModelHolder` (the alias poller follows it; a missing alias or a broken artefact
  leaves shadow scoring idle and says why in the log; the service stays ready).
- The scorer process runs under ``SCHED_IDLE`` and nice 19 with ``RXT_SHADOW_THREADS`` single-threaded onnxruntime
  sessions: it gets CPU time only when no normal-priority task wants it, and it has its own interpreter lock, so it
  cannot hold up the answering threads (a low-priority *thread* could: preempted while holding the lock it makes
  the event loop wait for it -- see :mod:`serving.shadow_worker`).
- After the answer is shaped, ``offer()`` draws a random number and, for the chosen fraction, sends the text and the
  champion's top center in one non-blocking datagram.  Nothing on the answering path waits:

  * while at least ``RXT_SHADOW_SKIP_WAITING`` triage requests wait for a batch (the answering path is behind), the
    draw is skipped: ``rxt_shadow_skipped_total{reason="busy"}``;
  * at most ``RXT_SHADOW_QUEUE`` requests are outstanding (sent, not scored); past it, or when the socket buffer is
    full, the shadow work is dropped: ``rxt_shadow_dropped_total{reason="queue_full"}``; a scorer process that died
    drops with ``reason="worker_down"`` (the next alias poll restarts it), a failed prediction with ``"error"``.

  So under saturation the shadow sample shrinks (the scorer falls behind, then work is dropped or skipped) instead
  of the answers slowing; ``rxt_shadow_scored_total`` counts what was scored.
- With ``RXT_SHADOW_IDLE_ONLY`` (the default) the scorer process also waits for idle moments: the request
  middleware counts this worker's requests in flight on :attr:`ShadowScorer.activity` (a shared memory page, see
  :class:`serving.shadow_worker.ActivityBoard`), and the scorer holds what it is sent until the worker has had none
  in flight for ``RXT_SHADOW_IDLE_MS``.  Measured: ``SCHED_IDLE`` alone still gave it ~6% of the service's CPU
  while the machine had no idle time at all (docs/benchmarks.md).
- A receiving thread turns each scored request into a :class:`serving.feedback.ShadowRow` (both versions, both top
  centers and confidences, both hand-off decisions, agreement) for the feedback writer, which stores it beside the
  answer's record (``shadow_scores``).  Outcomes recorded later give both models' live accuracy (``python -m
  training compare triage --live``).
- The challenger sees the same text; red-flag rules and urgency are the champion's (rules do not change with the
  model), so only the routing is compared.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from serving.feedback import ShadowRow
from serving.logs import SERVICE_LOGGER, log_event
from serving.metrics import Metrics
from serving.model_holder import ModelHolder, check_labels, model_version_of
from serving.registry import resolve_model_dir
from serving.settings import Settings
from serving.shadow_worker import MAX_MESSAGE, ActivityBoard

log = logging.getLogger(SERVICE_LOGGER)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOAD_TIMEOUT_S = 600.0


class ChallengerInfo:
    """What the service knows of the challenger loaded in the scorer process (the model lives there)."""

    def __init__(self, folder: Path, registry_version: str | None, info: dict) -> None:
        self.folder = Path(folder)
        self.labels = list(info["labels"])
        self.taxonomy_version = info.get("taxonomy_version")
        self.meta = {"quick": bool(info.get("quick"))}
        self.version = info["version"]  # "<v>+quick" for a first-start model, as the answers say it
        if self.meta["quick"]:
            self.registry_version = registry_version  # what the alias poller compares with


class ScorerProcess:
    """The scorer process and the service's end of its socket."""

    def __init__(self, on_message: Callable[[tuple], None], on_exit: Callable[[], None],
                 board: ActivityBoard | None = None, idle_ms: float = 0.0) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # the urgency blend's small products (see Settings.blas_threads)
        argv, fds = [str(child.fileno())], [child.fileno()]
        if board is not None:  # score only in the worker's idle moments (serving.shadow_worker)
            argv += [str(board.fd), repr(float(idle_ms))]
            fds.append(board.fd)
        self.proc = subprocess.Popen([sys.executable, "-m", "serving.shadow_worker", *argv],
                                     pass_fds=tuple(fds), env=env, cwd=PROJECT_ROOT)
        child.close()
        self.sock = parent
        self.scheduling = "starting"
        self.alive = True
        self._on_message = on_message
        self._on_exit = on_exit
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._receive, name="rxt-shadow-recv", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: tuple, block: bool) -> None:
        """Raises BlockingIOError (buffer full, only when not blocking) or OSError (process gone)."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if block:
            with self._send_lock:
                self.sock.sendall(data)
        else:
            self.sock.send(data, socket.MSG_DONTWAIT)

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            try:
                message = pickle.loads(data)
                if message[0] == "hello":
                    self.scheduling = message[1]
                else:
                    self._on_message(message)
            except Exception as exc:  # noqa: BLE001 - a bad message never kills the receiver
                log_event(log, "shadow scorer message not understood", level=logging.WARNING,
                          error=exc.__class__.__name__)
        self.alive = False
        self._on_exit()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.send(("stop",), block=False)
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout)


class ShadowScorer:
    def __init__(self, settings: Settings, metrics: Metrics, taxonomy: Any | None,
                 sink: Callable[[ShadowRow], bool] | None = None, seed: int | None = None,
                 waiting: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.fraction = float(settings.shadow_fraction)
        self.sink = sink
        self.taxonomy = taxonomy
        self.max_outstanding = int(settings.shadow_queue)
        self.skip_waiting = int(settings.shadow_skip_waiting)
        self.waiting = waiting  # requests waiting for a triage batch now (the answering path's backlog)
        # requests in flight in this worker (the request middleware counts them), read by the scorer process, which
        # then scores only in the worker's idle moments (RXT_SHADOW_IDLE_ONLY)
        self.activity: ActivityBoard | None = None
        if self.enabled and settings.shadow_idle_only:
            try:
                self.activity = ActivityBoard()
            except (AttributeError, OSError) as exc:  # no memfd (not Linux): score as requests come
                log_event(log, "shadow scoring not limited to idle moments: no shared memory board",
                          level=logging.WARNING, error=exc.__class__.__name__)
        self.idle_ms = float(settings.shadow_idle_ms)
        self.holder = ModelHolder(settings, uri=settings.challenger_model_uri, loader=self._load_in_process,
                                  check=lambda m: check_labels(m, taxonomy), name="challenger",
                                  on_change=lambda m: metrics.set_challenger(model_version_of(m)))
        self._random = random.Random(seed)
        self._agree: deque = deque(maxlen=settings.monitor_window)
        self._lock = threading.Lock()
        self._outstanding = 0
        self._process: ScorerProcess | None = None
        self._loads: dict[int, list] = {}
        self._tokens = 0
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    # --- the scorer process -----------------------------------------------------------------------------------
    def _ensure_process(self) -> ScorerProcess:
        with self._lock:
            if self._process is None or not self._process.alive:
                self._outstanding = 0
                self.metrics.shadow_outstanding.set(0)
                self._process = ScorerProcess(self._on_message, self._on_exit, self.activity, self.idle_ms)
            return self._process

    def _load_in_process(self, uri: str, settings: Settings) -> ChallengerInfo:
        folder, version = resolve_model_dir(str(uri), settings)
        registry_version = None if version is None else str(version)
        process = self._ensure_process()
        with self._lock:
            self._tokens += 1
            token = self._tokens
            waiter = self._loads[token] = [threading.Event(), None, None]
        try:
            centers = None if self.taxonomy is None else [c.id for c in self.taxonomy.centers]
            process.send(("load", token, str(folder), registry_version, settings.shadow_threads, centers), block=True)
            if not waiter[0].wait(LOAD_TIMEOUT_S):
                raise TimeoutError(f"the shadow scorer did not load {folder} within {LOAD_TIMEOUT_S:.0f} s")
        finally:
            with self._lock:
                self._loads.pop(token, None)
        info, error = waiter[1], waiter[2]
        if error is not None:
            raise RuntimeError(f"shadow scorer: {error}")
        return ChallengerInfo(folder, registry_version, info)

    def _on_message(self, message: tuple) -> None:
        kind = message[0]
        if kind == "loaded":
            _, token, info, error = message
            with self._lock:
                waiter = self._loads.get(token)
            if waiter is not None:
                waiter[1], waiter[2] = info, error
                waiter[0].set()
        elif kind == "scored":
            self._deliver(message[1], message[2])
        elif kind == "failed":
            ids, error = message[1], message[2]
            reason = "no_challenger" if error == "no challenger loaded" else "error"
            self.metrics.shadow_dropped.labels(reason=reason).inc(len(ids))
            log_event(log, "shadow scoring failed", level=logging.WARNING, error=error, requests=len(ids))
            self._settle(len(ids))

    def _on_exit(self) -> None:
        with self._lock:
            lost, self._outstanding = self._outstanding, 0
            self.metrics.shadow_outstanding.set(0)
            waiters = list(self._loads.values())
        for waiter in waiters:
            waiter[2] = "the shadow scorer process exited"
            waiter[0].set()
        if lost:
            self.metrics.shadow_dropped.labels(reason="worker_down").inc(lost)
        if not self._stopping:
            log_event(log, "shadow scorer process exited; shadow scoring idle until the next alias poll",
                      level=logging.WARNING, lost=lost)

    def _settle(self, n: int) -> None:
        with self._lock:
            self._outstanding = max(0, self._outstanding - n)
            self.metrics.shadow_outstanding.set(self._outstanding)

    def _deliver(self, version: str, rows: list[tuple]) -> None:
        now = datetime.now(UTC)
        for request_id, champion, s_center, s_conf, s_abstained in rows:
            c_version, c_center, c_conf, c_abstained = champion
            agree = c_center == s_center
            self._agree.append(agree)
            if self.sink is not None:
                self.sink(ShadowRow(request_id=request_id, scored_at=now, champion_version=c_version,
                                    challenger_version=str(version), champion_center=c_center,
                                    challenger_center=s_center, champion_confidence=c_conf,
                                    challenger_confidence=s_conf, champion_abstained=c_abstained,
                                    challenger_abstained=s_abstained, agree=agree))
        self.metrics.shadow_scored.inc(len(rows))
        if self._agree:
            self.metrics.shadow_agreement.set(sum(self._agree) / len(self._agree))
        self._settle(len(rows))

    # --- life cycle -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Start the scorer process and load the challenger (start-up, in a worker thread); a failure only idles
        shadow scoring."""
        if self.enabled:
            result = self.holder.load()
            if not result.reloaded:
                log_event(log, "shadow scoring idle: no challenger loaded", level=logging.WARNING,
                          uri=self.holder.uri, error=result.error)

    def poll_once(self):
        if not self.enabled:
            return None
        process = self._process
        if self.holder.model is not None and (process is None or not process.alive):
            return self.holder.reload()  # the scorer process died: a new one loads the same challenger
        return self.holder.poll_once()

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            self._stopping = True
            process.stop(timeout)

    def status(self) -> dict:
        process = self._process
        return {"enabled": self.enabled, "fraction": self.fraction, "challenger_version": self.holder.version,
                "idle_only": self.activity is not None,
                "uri": self.holder.uri, "outstanding": self._outstanding, "error": self.holder.last_error,
                "process": None if process is None else {"pid": process.pid, "alive": process.alive,
                                                          "scheduling": process.scheduling}}

    def wait_idle(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._outstanding and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._outstanding

    # --- answering path: a random draw and one non-blocking send, nothing else ---------------------------------
    def offer(self, request_id: str, text: str, outcome: Any) -> bool:
        process = self._process
        if not self.enabled or self.holder.model is None or process is None or not outcome.centers:
            return False
        if self._random.random() >= self.fraction:
            return False
        if self.skip_waiting and self.waiting is not None and self.waiting() >= self.skip_waiting:
            self.metrics.shadow_skipped.labels(reason="busy").inc()
            return False
        with self._lock:
            if self._outstanding >= self.max_outstanding:
                full = True
            else:
                full = False
                self._outstanding += 1
                self.metrics.shadow_outstanding.set(self._outstanding)  # under the lock: never a stale value last
        if full:
            self.metrics.shadow_dropped.labels(reason="queue_full").inc()
            return False
        c_center, c_conf = outcome.centers[0]
        champion = (str(outcome.model_version), str(c_center), float(c_conf), bool(outcome.abstained))
        try:
            process.send(("score", request_id, text, champion), block=False)
            return True
        except BlockingIOError:
            reason = "queue_full"
        except OSError:
            reason = "worker_down"
        self._settle(1)
        self.metrics.shadow_dropped.labels(reason=reason).inc()
        return False
