"""The shadow challenger's own process (issue 15): ``python -m serving.shadow_worker FD``, started by
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
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
from pathlib import Path

from triage.classifier import TriageClassifier

SHADOW_BATCH = 16
MAX_MESSAGE = 1 << 20


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


def serve(sock: socket.socket) -> None:
    def send(msg: tuple) -> None:
        sock.send(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    model, version, lowered = None, None, None
    send(("hello", "normal until the first model is loaded"))
    while True:
        try:
            data = sock.recv(MAX_MESSAGE)
        except OSError:
            return
        if not data:
            return
        messages = [pickle.loads(data)]
        # drain what else is waiting (a micro-batch), without blocking
        while len(messages) < SHADOW_BATCH:
            try:
                more = sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not more:
                break
            messages.append(pickle.loads(more))
        batch: list[tuple] = []
        for msg in messages + [None]:
            if msg is not None and msg[0] == "score":
                batch.append(msg)
                continue
            if batch:  # score what came before this control message
                rows = [(m[1], m[3]) for m in batch]
                if model is None:
                    send(("failed", [r for r, _ in rows], "no challenger loaded"))
                else:
                    try:
                        predictions = model.predict([m[2] for m in batch])
                        send(("scored", version, [(rid, champ, str(p.centers[0][0]), float(p.centers[0][1]),
                                                   bool(p.abstained)) for (rid, champ), p in zip(rows, predictions)]))
                    except Exception as exc:  # noqa: BLE001 - shadow work never takes anything down
                        send(("failed", [r for r, _ in rows], exc.__class__.__name__))
                batch = []
            if msg is None:
                break
            if msg[0] == "stop":
                return
            if msg[0] == "load":
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(argv[0]))
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
