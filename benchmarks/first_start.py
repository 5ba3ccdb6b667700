"""Time from the end of setup to the first answers on a fresh machine (not a test): what ``scripts/run`` does after
``scripts/setup``, on an empty work dir.

    .venv/bin/python benchmarks/first_start.py [--work-dir /tmp/fresh/var] [--workers 2] [--keep-background]

1. ``python -m training bootstrap --quick`` on an empty ``RXT_WORK_DIR`` (KB build, quick triage model, the
   background ``bootstrap --full`` started);
2. ``python -m serving --workers N`` with the alias poller on, until ``POST /v1/triage`` and
   ``POST /v1/prescriptions/check`` both answer 200;
prints each step's seconds, the model versions the answers name, CPU and load average.  The background full
training is stopped at the end unless ``--keep-background`` (it takes ~20 minutes of both cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep-background", action="store_true")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the work dir and its quick model: measure only service start -> first answers")
    args = ap.parse_args(argv)
    import httpx

    from evaluation.cpu_info import describe_cpu

    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="first-start-")) / "var").resolve()
    if work.exists() and not args.reuse:
        shutil.rmtree(work)
    keys = {"fs-chat-key-not-secret": "chat", "fs-prescriber-key-not-secret": "prescriber"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RXT_")}
    env.update({"RXT_WORK_DIR": str(work), "RXT_API_KEYS": json.dumps(keys), "RXT_MODEL_POLL_SECONDS": "15",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    print(f"cpu: {describe_cpu()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; work dir {work}",
          flush=True)
    t0 = time.perf_counter()
    boot = subprocess.run([sys.executable, "-m", "training", "bootstrap"] + (["--no-train"] if args.reuse else ["--quick"]),
                          cwd=ROOT, env=env, capture_output=True, text=True)
    t_boot = time.perf_counter() - t0
    import resource

    boot_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    boot_cpu_s = boot_cpu.ru_utime + boot_cpu.ru_stime
    print(boot.stderr[-2500:], flush=True)
    if boot.returncode != 0:
        print(f"bootstrap failed ({boot.returncode})")
        return 1
    print(f"bootstrap --quick: {t_boot:.0f} s wall, {boot_cpu_s:.0f} s CPU (load {os.getloadavg()[0]:.2f})",
          flush=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(work / "first-start-server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "serving", "--workers", str(args.workers), "--port", str(port)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t1 = time.perf_counter()
    triage_at = rx_at = None
    answers = {}
    try:
        while time.perf_counter() - t1 < 600 and (triage_at is None or rx_at is None):
            if server.poll() is not None:
                print(f"server exited: {(work / 'first-start-server.log').read_text()[-2000:]}")
                return 1
            try:
                if triage_at is None:
                    r = httpx.post(f"{url}/v1/triage", json={"text": "sore throat and a fever since yesterday"},
                                   headers={"Authorization": "Bearer fs-chat-key-not-secret"}, timeout=10)
                    if r.status_code == 200:
                        triage_at, answers["triage"] = time.perf_counter(), r.json()["model_version"]
                if rx_at is None:
                    r = httpx.post(f"{url}/v1/prescriptions/check",
                                   json={"items": [{"sig": "warfarin 5 mg daily"}, {"sig": "ibuprofen 400 mg tid"}]},
                                   headers={"Authorization": "Bearer fs-prescriber-key-not-secret"}, timeout=10)
                    if r.status_code == 200:
                        rx_at, answers["rx"] = time.perf_counter(), r.json()["model_status"]
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        ready = httpx.get(f"{url}/readyz", timeout=10).json()
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    print(f"service start -> first triage answer: {triage_at - t1:.1f} s (model_version {answers.get('triage')})")
    print(f"service start -> first prescription check: {rx_at - t1:.1f} s (model_status {answers.get('rx')})")
    print(f"setup end -> first triage answer: {triage_at - t0:.0f} s; /readyz worker: {ready.get('worker')}")
    full_log = work / "logs" / "bootstrap-full.log"
    running = subprocess.run(["pgrep", "-f", "training bootstrap --full"], capture_output=True, text=True).stdout.split()
    print(f"background full training: {'running, pid ' + ' '.join(running) if running else 'not running'}; "
          f"log {full_log}: {full_log.read_text()[-400:] if full_log.exists() else '(none)'}")
    if running and not args.keep_background:
        lock_holders = [int(p) for p in running]
        for pid in lock_holders:
            try:
                if str(work) in Path(f"/proc/{pid}/environ").read_text(errors="ignore"):
                    os.killpg(os.getpgid(pid), signal.SIGTERM)  # ours only: the one started for this work dir
                    print(f"stopped the background training (pid {pid})")
            except (OSError, ProcessLookupError):
                pass
    print(f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
