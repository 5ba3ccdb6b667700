"""The shadow challenger's own process (issue 15): ``python -m serving.shadow_worker FD [BOARD_FD IDLE_MS]``, started by
:class:`serving.shadow.ShadowScorer`, one per service worker process.

Why a process and not a thread: a thread of the service shares its interpreter lock.  A shadow thread lowered to
nice 19 that is preempted while it holds the lock (tokenising, building rows) makes the answering thread wait until
the scheduler gives the low-priority thread the CPU again -- tens of milliseconds on a saturated 2-core machine, a
priority inversion that lands in the p99.  This process has its own interpreter; after loading its first model it
runs under ``SCHED_IDLE`` (the Linux class for work that should only get CPU time nobody else wants) and nice 19,
with ``RXT_SHADOW_THREADS`` single-threaded onnxruntime sessions and no spinning, so it takes CPU only when no
normal-priority task wants it.  Under saturation it simply falls behind; the service then drops shadow work (its
bounded count of outstanding requests) instead of slowing answers.

The protocol, over a ``SOCK_SEQPACKET`` Unix socket pair (one pickled tuple per message, boundaries kept):

- service -> worker: ``("load", token, folder, registry version, threads, center ids of the taxonomy or None)``; ``("score", request_id, text, champion)`` with
  ``champion = (version, top center, confidence, abstained)``; ``("stop",)``.
- worker -> service: ``("hello", scheduling)``; ``("loaded", token, info | None, error | None)`` with ``info`` the
  model's labels, taxonomy version, quick flag and version label (after a smoke prediction); ``("scored", version,
  [(request_id, champion, center, confidence, abstained), ...])``; ``("failed", [request_id, ...], error)``.

The worker exits when the service's end closes (the service stopped or died).

**Idle moments only** (``python -m serving.shadow_worker FD BOARD_FD IDLE_MS``): the service worker counts its
requests in flight on an :class:`ActivityBoard`, a shared memory page whose descriptor this process inherits.  The
scorer then holds the requests it is sent (the service bounds how many are outstanding) and scores them, a few at a
time, only while the worker has had no request in flight for ``IDLE_MS``; while the worker is busy it only reads
its socket every ``POLL_S`` (doubling up to ``POLL_MAX_S`` while the worker stays busy; it does not wake for each
request sent meanwhile).  ``SCHED_IDLE`` alone was not enough: measured at c=64 on two cores, the scorer still
found CPU in the answering path's short gaps and cost ~8-10% of the p99 (docs/benchmarks.md).  Without a board
(``FD`` only) it scores as soon as requests arrive, as before.
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import socket
import struct
import sys
import time
from collections import deque
from pathlib import Path

from triage.classifier import TriageClassifier

SHADOW_BATCH = 16
IDLE_BATCH = 4  # texts scored between two looks at the board (a few ms of the challenger each)
POLL_S = 0.01  # how often a scorer holding requests looks at the board while the worker is busy ...
POLL_MAX_S = 0.08  # ... doubling up to this while it stays busy
MAX_MESSAGE = 1 << 20


class ActivityBoard:
    """Requests in flight in one service worker and when it last became idle, on a shared memory page (a memfd the
    scorer process inherits).  The worker's event loop writes it (:meth:`enter` / :meth:`leave`, one ``pack_into``
    each: no lock, one writer); the scorer process only reads it.  A torn read can only make the scorer start a
    moment early or late, never change an answer."""

    LAYOUT = struct.Struct("qd")  # requests in flight, time.monotonic() when the count last fell to 0

    def __init__(self, fd: int | None = None) -> None:
        self.owner = fd is None
        if fd is None:
            fd = os.memfd_create("rxt-shadow-activity")  # close-on-exec; the scorer gets it through pass_fds
            os.ftruncate(fd, mmap.PAGESIZE)
        self.fd = fd
        self._map = mmap.mmap(fd, mmap.PAGESIZE)
        self._in_flight = 0
        if self.owner:
            self.LAYOUT.pack_into(self._map, 0, 0, time.monotonic())

    def enter(self) -> None:
        self._in_flight += 1
        self.LAYOUT.pack_into(self._map, 0, self._in_flight, 0.0)

    def leave(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        self.LAYOUT.pack_into(self._map, 0, self._in_flight, time.monotonic() if self._in_flight == 0 else 0.0)

    def read(self) -> tuple[int, float]:
        """(requests in flight, seconds the worker has been idle: 0.0 while it is busy)."""
        in_flight, since = self.LAYOUT.unpack_from(self._map, 0)
        return in_flight, (max(0.0, time.monotonic() - since) if in_flight == 0 and since > 0 else 0.0)

    def close(self) -> None:
        self._map.close()
        if self.owner:
            os.close(self.fd)


def lower_priority() -> str:
    """SCHED_IDLE and nice 19 for every thread of this process (on Linux both are per thread: the threads the first
    load started are set one by one; threads created afterwards inherit them); says what held."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    held = set()
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
            held.add("nice 19")
        except (AttributeError, OSError):
            pass
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            held.add("SCHED_IDLE")
        except (AttributeError, OSError):
            pass
    return ", ".join(h for h in ("nice 19", "SCHED_IDLE") if h in held) or "normal"


SMOKE_TEXT = "I have had a headache since yesterday"  # serving.model_holder.SMOKE_TEXT (not imported: light child)


def _load(folder: str, registry_version: str | None, threads: int, centers: list[str] | None = None):
    """The challenger, as serving.components.load_triage_classifier would load it, smoke-tested; its version label
    as serving.model_holder.model_version_of says it (``<v>+quick`` for a first-start model)."""
    model = TriageClassifier.from_folder(folder, version=registry_version, intra_op_threads=threads, spinning=False)
    unknown = [label for label in model.labels if centers is not None and label not in centers]
    if unknown:  # checked here too, so that a refused model never replaces the one being scored
        raise ValueError(f"incompatible model: labels {unknown[:10]} are not centers of the served taxonomy")
    quick = bool(model.meta.get("quick"))
    predictions = model.predict([SMOKE_TEXT])
    if len(predictions) != 1 or not predictions[0].centers:
        raise ValueError("the model's smoke prediction returned no centers")
    if quick:
        label = f"{registry_version or 'local'}+quick"
    else:
        label = registry_version if registry_version is not None else f"local:{Path(folder).name}"
    info = {"labels": list(model.labels), "taxonomy_version": getattr(model, "taxonomy_version", None),
            "quick": quick, "version": label}
    return model, info


def _receive(sock: socket.socket, timeout: float | None, limit: int = SHADOW_BATCH) -> list[tuple] | None:
    """The messages waiting (at most ``limit``), after waiting up to ``timeout`` s for the first (None: until one
    comes); None when the service's end closed."""
    if timeout is not None and not select.select([sock], [], [], timeout)[0]:
        return []
    try:
        data = sock.recv(MAX_MESSAGE)
    except OSError:
        return None
    if not data:
        return None
    messages = [pickle.loads(data)]
    while len(messages) < limit:  # drain what else is waiting, without blocking
        try:
            more = sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        if not more:
            break
        messages.append(pickle.loads(more))
    return messages


def serve(sock: socket.socket, board: ActivityBoard | None = None, idle_s: float = 0.0) -> None:
    def send(msg: tuple) -> None:
        sock.send(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def idle() -> bool:
        if board is None:
            return True
        in_flight, idle_for = board.read()
        return in_flight == 0 and idle_for >= idle_s

    def score(batch: list[tuple]) -> None:
        rows = [(m[1], m[3]) for m in batch]
        if model is None:
            send(("failed", [r for r, _ in rows], "no challenger loaded"))
            return
        try:
            predictions = model.predict([m[2] for m in batch])
            send(("scored", version, [(rid, champ, str(p.centers[0][0]), float(p.centers[0][1]),
                                       bool(p.abstained)) for (rid, champ), p in zip(rows, predictions)]))
        except Exception as exc:  # noqa: BLE001 - shadow work never takes anything down
            send(("failed", [r for r, _ in rows], exc.__class__.__name__))

    model, version, lowered = None, None, None
    pending: deque = deque()  # score requests not scored yet (the service bounds them: RXT_SHADOW_QUEUE)
    send(("hello", "normal until the first model is loaded"))
    poll = POLL_S
    while True:
        limit = SHADOW_BATCH
        if not pending:
            timeout = None  # nothing to do: wait for the service
        elif board is None or idle():
            timeout = 0.0  # score now; only pick up what else has arrived
        else:
            # the worker is busy: hold the requests and sleep (not woken by each request the worker sends
            # meanwhile), then take everything that came and look at the board again
            time.sleep(poll)
            poll = min(POLL_MAX_S, poll * 2)
            timeout, limit = 0.0, 1 << 16
        messages = _receive(sock, timeout, limit)
        if messages is None:
            return
        for msg in messages:
            if msg[0] == "score":
                pending.append(msg)
            elif msg[0] == "stop":
                if board is None and pending:  # as before: what came before the stop is scored
                    score(list(pending))
                return
            elif msg[0] == "load":
                if board is None and pending:  # as before: what came before a load is scored by the model it met
                    score(list(pending))
                    pending.clear()
                _, token, folder, registry_version, threads, centers = msg
                reply = None
                try:
                    model, info = _load(folder, registry_version, threads, centers)
                    version = info["version"]
                    reply = ("loaded", token, info, None)
                except Exception as exc:  # noqa: BLE001 - the service keeps the previous challenger
                    text = str(exc).strip() or exc.__class__.__name__
                    reply = ("loaded", token, None, f"{exc.__class__.__name__}: {text}"[:1000])
                if lowered is None:  # the first load ran at normal priority (start-up); from now on, idle only
                    lowered = lower_priority()
                    send(("hello", lowered))
                send(reply)
        if board is None:
            if pending:
                score(list(pending))
                pending.clear()
        elif pending and (model is None or idle()):  # a few at a time, then look at the board again
            score([pending.popleft() for _ in range(min(IDLE_BATCH, len(pending)))])
            poll = POLL_S


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(argv[0]))
    board = ActivityBoard(int(argv[1])) if len(argv) > 1 else None
    idle_s = float(argv[2]) / 1000 if len(argv) > 2 else 0.0
    try:
        serve(sock, board, idle_s)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
