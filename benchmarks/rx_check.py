"""Benchmark of the prescription checker (not a test): KB load time, in-process checks/s, and over HTTP.

    .venv/bin/python benchmarks/rx_check.py [--kb PATH] [--n 5000] [--http-seconds 10] [--concurrency 4]

In-process: 5-item prescriptions (structured items, sig lines, and a mix with current medications and a
patient profile that fires several rules), rules only, after warm-up; prints checks/s and us/check next
to the goal (>= 2,000 checks/s).  KB: artefact size, cold JSON load + index build, fuzzy-index and spaCy
warm-up.  HTTP: the real app (``serving.app.create_app``) under uvicorn on a loopback port with a
prescriber key, ``POST /v1/prescriptions/check`` (each check is also recorded in the review database, as
in production: SQLite under a temp dir), httpx clients in threads.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STRUCTURED = {"patient": {"age_years": 58, "weight_kg": 80},
              "items": [{"drug": "amlodipine", "dose": 5, "unit": "mg", "frequency": "daily"},
                        {"drug": "metformin", "dose": 500, "unit": "mg", "frequency": "bid"},
                        {"drug": "atorvastatin", "dose": 20, "unit": "mg", "frequency": "qhs"},
                        {"drug": "aspirin", "dose": 81, "unit": "mg", "frequency": "daily"},
                        {"drug": "omeprazole", "dose": 20, "unit": "mg", "frequency": "daily"}]}
SIGS = {"patient": {"age_years": 40},
        "items": [{"sig": "Amoxicillin 500 mg PO TID x 7 days"}, {"sig": "ibuprofen 400mg q6h prn pain"},
                  {"sig": "Tylenol ES 2 tabs q6h prn"}, {"sig": "lisinopril 10mg daily"},
                  {"sig": "metformin 1 g bid"}]}
RISKY = {"patient": {"age_years": 72, "egfr": 28, "allergies": ["penicillin", "sulfa"], "pregnant": False,
                     "conditions": ["peptic ulcer", "asthma"],
                     "current_medications": ["warfarin", "Lasix", "sertraline", "Tylenol"]},
         "items": [{"sig": "methotrexate 2.5mg daily"}, {"drug": "Augmentin", "dose": 875, "unit": "mg",
                                                          "frequency": "bid"},
                   {"drug": "naproxen", "dose": 500, "unit": "mg", "frequency": "bid"},
                   {"drug": "propranolol", "dose": 40, "unit": "mg", "frequency": "bid"},
                   {"drug": "Bactrim DS", "dose": 1, "unit": "tab", "frequency": "bid"}]}


def in_process(checker, n: int) -> list[tuple[str, float, int]]:
    from prescription_check import Prescription

    out = []
    for name, payload in (("structured", STRUCTURED), ("sig lines", SIGS), ("risky + 4 current meds", RISKY)):
        rx = Prescription.model_validate(payload)
        for _ in range(50):
            checker.check(rx)
        t0 = time.perf_counter()
        for _ in range(n):
            res = checker.check(rx)
        dt = time.perf_counter() - t0
        out.append((name, n / dt, len(res.findings)))
    # including request validation (what the HTTP route also pays)
    t0 = time.perf_counter()
    for _ in range(n):
        checker.check(Prescription.model_validate(STRUCTURED))
    out.append(("structured, incl. pydantic validation", n / (time.perf_counter() - t0), 0))
    return out


def http(checker, seconds: float, concurrency: int) -> dict:
    import httpx
    import uvicorn

    from serving.app import create_app
    from serving.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="rxbench-"))
    key = "bench-prescriber-key-not-secret"
    settings = Settings(work_dir=tmp / "var", api_keys={key: "prescriber"}, kb_path=checker.kb.path)
    app = create_app(settings, checker=checker)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code < 500:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.time() + seconds

    def worker():
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            while time.time() < stop:
                t = time.perf_counter()
                r = client.post("/v1/prescriptions/check", json=STRUCTURED)
                d = time.perf_counter() - t
                with lock:
                    if r.status_code != 200:
                        errors[0] += 1
                    lat.append(d)

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    server.should_exit = True
    thread.join(timeout=10)
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    return {"requests": len(lat), "rps": len(lat) / wall, "p50_ms": q(0.5), "p99_ms": q(0.99),
            "errors": errors[0], "mean_ms": statistics.mean(lat) * 1000 if lat else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=Path, default=None)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--http-seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-http", action="store_true")
    args = ap.parse_args(argv)

    from prescription_check import Checker
    from prescription_check.kb import KnowledgeBase
    from prescription_check.sig_parser import parse_sig
    from serving.settings import get_settings

    path = args.kb or get_settings().resolved_kb_path()
    if not path.exists():
        t0 = time.perf_counter()
        from training.kb_build import ensure_kb

        ensure_kb(get_settings().model_copy(update={"kb_path": path}))
        print(f"(KB built in {time.perf_counter() - t0:.1f} s)")
    print(f"load average (shared 2-core machine): {os.getloadavg()[0]:.2f}\n")
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        kb = KnowledgeBase.load(path)
        loads.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    _ = kb.normalizer.fuzzy
    fuzzy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    parse_sig("amoxicillin 500 mg po tid")
    spacy_s = time.perf_counter() - t0
    print("## KB load\n")
    print("| what | value |\n|---|---|")
    print(f"| artefact | {path.name}, {path.stat().st_size / 1e6:.1f} MB, version {kb.version} |")
    print(f"| JSON load + indexes (best of 3) | {min(loads) * 1000:.0f} ms |")
    print(f"| fuzzy index (lazy, built by warm()) | {fuzzy_s * 1000:.0f} ms |")
    print(f"| spaCy blank pipeline + Matcher | {spacy_s * 1000:.0f} ms |")

    checker = Checker(kb)
    print("\n## In-process checks (5-item prescriptions, rules only)\n")
    print("| prescription | checks/s | us/check | findings | goal 2,000/s |\n|---|---|---|---|---|")
    for name, rate, nf in in_process(checker, args.n):
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:.0f} | {nf} | {rate / 2000:.2f}x |")
    if not args.no_http:
        print(f"\n## HTTP: POST /v1/prescriptions/check ({args.concurrency} client threads, "
              f"{args.http_seconds:g} s, check + review-DB record per request)\n")
        try:
            h = http(checker, args.http_seconds, args.concurrency)
            print("| requests | req/s | p50 ms | p99 ms | errors | in-process/HTTP |\n|---|---|---|---|---|---|")
            rate = in_process(checker, 1000)[0][1]
            print(f"| {h['requests']} | {h['rps']:,.0f} | {h['p50_ms']:.1f} | {h['p99_ms']:.1f} | {h['errors']} | "
                  f"{rate / max(h['rps'], 1e-9):.0f}x |")
        except Exception as exc:  # report, don't hide
            print(f"HTTP benchmark not run: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
