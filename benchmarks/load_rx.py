"""Load benchmark of ``POST /v1/prescriptions/check`` over HTTP with ``wrk`` (not a test), on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/load_rx.py --wrk [--db sqlite postgresql] [--connections 4 16] [--seconds 10]
        [--variants per-request group-commit] [--workers 1 [2]] [--base-src DIR] [--kb PATH] [--pg-url URL]
        [--profile SECONDS]

For each database and serving variant the script starts the real service as its own process (``python -m
serving``, rules-only checker on the KB artefact, a fresh review database: a SQLite file in a temp dir, or a fresh
PostgreSQL schema dropped afterwards), waits for ``/readyz``'s ``database`` and ``kb`` components, and drives it with
``wrk`` (one thread, N keep-alive connections) posting 200 varied prescriptions round-robin: half of them are flagged
(review/block at moderate or worse: each is stored as a pending review with its audit entry), half pass (light
audit entry only) -- the split is checked in-process before the run.  Every answer is sent only after its check is
committed (the service's rule), so req/s here is committed checks per second.  After each run the audit hash chain
is verified and the number of stored reviews is compared with the number of flagged answers.

Variants (one run, side by side): ``per-request`` = ``RXT_DB_GROUP_COMMIT=false`` (one transaction per request, the
behaviour before issue #16), ``group-commit`` = ``RXT_DB_GROUP_COMMIT=true`` (the default: one writer per process
batches concurrent checks into one transaction).  ``--profile S`` samples the server with py-spy for S seconds
during each variant's run at the highest connection count and prints the top functions (own time).
``--base-src DIR`` adds the variant ``base``: group commit served from another source tree (``git archive <commit> |
tar -x -C DIR``), run before this tree's variants, so a before/after comparison is one run; ``--workers 1 2`` runs
each worker count in turn.  Each row also gives the mean checks per group-commit transaction over the run (the
service's ``rxt_check_commit_batch_size`` metric; ``-`` for code without it) and the load average before/after.

Goal on 2 cores: >= 1,000 req/s with p99 < 100 ms at 16 connections on both databases, 0 errors.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from wrk_support import (  # noqa: E402
    cpu_seconds, py_spy_record, raw_stacks, run_wrk, tree_pids, wrk_available)

KEY = "bench-prescriber-key-not-secret"
VARIANTS = {"per-request": {"RXT_DB_GROUP_COMMIT": "false"}, "group-commit": {"RXT_DB_GROUP_COMMIT": "true"}}

# single drugs that pass on their own for an adult (checked in-process before the run)
CLEAN_SIGS = ["amoxicillin 500 mg po tid x 7 days", "paracetamol 1 g q6h prn", "ibuprofen 400mg q8h prn pain",
              "omeprazole 20 mg daily", "lisinopril 10mg daily", "metformin 500 mg bid", "atorvastatin 20 mg qhs",
              "amlodipine 5 mg daily", "cetirizine 10 mg daily", "sertraline 50 mg daily",
              "levothyroxine 50 mcg daily"]
# combinations with documented interactions / allergies / conditions (flagged; checked in-process)
FLAGGED = [
    [{"sig": "warfarin 5 mg daily"}, {"sig": "ibuprofen 400mg q8h prn pain"}],
    [{"sig": "methotrexate 2.5mg daily"}, {"drug": "naproxen", "dose": 500, "unit": "mg", "frequency": "bid"}],
    [{"sig": "sertraline 50 mg daily"}, {"sig": "tramadol 50 mg q6h prn"}],
    [{"drug": "amlodipine", "dose": 5, "unit": "mg", "frequency": "daily"},
     {"drug": "metformin", "dose": 500, "unit": "mg", "frequency": "bid"},
     {"drug": "atorvastatin", "dose": 20, "unit": "mg", "frequency": "qhs"},
     {"drug": "aspirin", "dose": 81, "unit": "mg", "frequency": "daily"}],
    [{"sig": "Amoxicillin 500 mg PO TID x 7 days"}, {"sig": "ibuprofen 400mg q6h prn pain"},
     {"sig": "lisinopril 10mg daily"}, {"sig": "metformin 1 g bid"}],
    [{"sig": "simvastatin 40 mg qhs"}, {"sig": "clarithromycin 500 mg bid"}],
]


def make_bodies(checker, n: int = 200, seed: int = 16) -> tuple[list[dict], int]:
    """``n`` varied prescriptions, half flagged (queued) and half not, verified with the real checker."""
    from prescription_check import Prescription
    from serving.review_queue import should_queue

    rng = random.Random(seed)
    clean, flagged = [], []
    attempts = 0
    while (len(clean) < n // 2 or len(flagged) < n - n // 2) and attempts < 20 * n:
        attempts += 1
        i = attempts
        want_flag = len(flagged) < n - n // 2 and (len(clean) >= n // 2 or i % 2)
        patient = {"age_years": rng.randint(19, 80), "weight_kg": rng.randint(50, 110)}
        if want_flag:
            items = rng.choice(FLAGGED)
            if rng.random() < 0.3:
                patient["allergies"] = ["penicillin"]
        else:
            items = [{"sig": s} for s in rng.sample(CLEAN_SIGS, 1)]
        body = {"id": f"bench-{uuid.uuid4().hex[:12]}", "prescriber_id": f"dr-{i % 17}", "patient": patient,
                "items": items}
        result = checker.check(Prescription.model_validate(body)).model_dump(mode="json")
        queued = should_queue(result["verdict"], result["findings"], "moderate")
        if queued and len(flagged) < n - n // 2:
            flagged.append(body)
        elif not queued and len(clean) < n // 2:
            clean.append(body)
    bodies = [b for pair in zip(flagged, clean) for b in pair]
    return bodies, len(flagged)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *, db_url: str, kb: Path, work_dir: Path, env_extra: dict, workers: int, log_path: Path,
                 src: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RXT_")}
        env.update({
            "RXT_API_KEYS": json.dumps({KEY: "prescriber", "bench-admin-key-not-secret": "admin"}),
            "RXT_WORK_DIR": str(work_dir), "RXT_KB_PATH": str(kb), "RXT_DATABASE_URL": db_url,
            "RXT_DDI_MODEL_URI": str(work_dir / "no-ddi-model"),  # rules-only: the DB path is what is measured
            "RXT_TRIAGE_MODEL_URI": str(work_dir / "no-triage-model"),
            "RXT_MODEL_POLL_SECONDS": "0", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(src),
            **env_extra,
        })
        cmd = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(self.port),
               "--log-level", "warning"]
        if workers != 1:
            cmd += ["--workers", str(workers)]
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=src, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> dict:
        import httpx

        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                last = httpx.get(f"{self.url}/readyz", timeout=2,
                                 headers={"Authorization": "Bearer bench-admin-key-not-secret"}).json()
                comps = last.get("components", {})
                if all(comps.get(n, {}).get("ok") for n in ("database", "kb")):
                    return last
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout}s: {last}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def pg_schema(pg_url: str) -> tuple[str, callable]:
    from urllib.parse import quote

    from sqlalchemy import create_engine

    schema = f"rxt_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_url else "?"

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

    return f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}", drop


def verify(db_url: str) -> tuple[str, int, int]:
    from sqlalchemy import func, select

    from serving.audit import verify_chain
    from serving.db import AuditEntryRow, Database, Review

    db = Database(db_url)
    try:
        with db.sessions() as session:
            result = verify_chain(session)
            reviews = session.scalar(select(func.count()).select_from(Review))
            entries = session.scalar(select(func.count()).select_from(AuditEntryRow))
        return str(result), reviews, entries
    finally:
        db.dispose()


def commit_batches(url: str) -> tuple[float, float] | None:
    """(checks, transactions) recorded by group commit so far (``rxt_check_commit_batch_size``; None before it
    existed)."""
    import httpx

    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except Exception:  # noqa: BLE001 - informative only
        return None
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith(("rxt_check_commit_batch_size_sum", "rxt_check_commit_batch_size_count"))}
    if "rxt_check_commit_batch_size_count" not in values:
        return None
    return values["rxt_check_commit_batch_size_sum"], values["rxt_check_commit_batch_size_count"]


def summarise_raw(paths: list[Path], top: int = 18) -> list[tuple[str, float, float]]:
    """Own-time and total-time shares per function from py-spy raw (collapsed) stacks."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for stack, n in raw_stacks(paths):
        samples += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            total[f] = total.get(f, 0) + n
    rows = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return [(name, 100 * n / max(samples, 1), 100 * total.get(name, 0) / max(samples, 1)) for name, n in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wrk", action="store_true", help="drive the service with wrk (the only mode)")
    ap.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--connections", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="service worker processes (python -m serving --workers); several: each in turn")
    ap.add_argument("--base-src", type=Path, default=None,
                    help="also run variant 'base': group commit served from this source tree (e.g. `git archive "
                    "<commit> | tar -x -C DIR`), before this tree's variants: before/after in one run")
    ap.add_argument("--kb", type=Path, default=None)
    ap.add_argument("--pg-url", default=os.environ.get("RXT_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--profile", type=float, default=0.0, help="py-spy the server for this many seconds")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if not wrk_available():
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    from evaluation.cpu_info import describe_cpu
    from prescription_check import Checker
    from prescription_check.kb import KnowledgeBase
    from serving.settings import get_settings

    kb_path = (args.kb or get_settings().resolved_kb_path()).resolve()
    if not kb_path.exists():
        kb_path = Path("/work/main/var/kb/kb.json")
    bodies, n_flagged = make_bodies(Checker(KnowledgeBase.load(kb_path)))
    print(f"cpu: {describe_cpu()}")
    print(f"bodies: {len(bodies)} ({n_flagged} flagged and queued, {len(bodies) - n_flagged} pass); kb {kb_path}; "
          f"workers {' '.join(map(str, args.workers))}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n", flush=True)
    results = []
    log_dir = Path(tempfile.mkdtemp(prefix="load-rx-"))
    variants = (["base"] if args.base_src else []) + list(args.variants)
    runs = [(db, workers, variant) for db in args.db for workers in args.workers for variant in variants]
    for db, workers, variant in runs:
        work = Path(tempfile.mkdtemp(prefix=f"load-rx-{db}-"))
        drop = None
        if db == "sqlite":
            url = f"sqlite:///{work / 'rx.db'}"
        else:
            url, drop = pg_schema(args.pg_url)
        src = args.base_src.resolve() if variant == "base" else ROOT
        env_extra = VARIANTS["group-commit" if variant == "base" else variant]
        server = Server(db_url=url, kb=kb_path, work_dir=work, env_extra=env_extra, src=src,
                        workers=workers, log_path=log_dir / f"{db}-{workers}w-{variant}.log")
        try:
            server.wait_ready()
            run_wrk(f"{server.url}/v1/prescriptions/check", bodies, KEY, connections=4, seconds=args.warmup)
            for c in args.connections:
                load = os.getloadavg()[0]
                profile_note = ""
                if args.profile and c == max(args.connections):
                    import threading

                    pids = [server.proc.pid] + [int(p) for p in subprocess.run(
                        ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()]
                    out = log_dir / f"pyspy-{db}-{workers}w-{variant}"
                    t = threading.Thread(target=py_spy_record, args=(pids, args.profile, out))
                    t.start()
                pids = tree_pids(server.proc.pid)
                batches0 = commit_batches(server.url)
                cpu0 = cpu_seconds(pids)
                row = run_wrk(f"{server.url}/v1/prescriptions/check", bodies, KEY, connections=c,
                              seconds=args.seconds)
                row["cpu_ms_per_request"] = round((cpu_seconds(pids) - cpu0) * 1000 / max(row["requests"], 1), 3)
                batches1 = commit_batches(server.url)
                row["batch_mean"] = (round((batches1[0] - batches0[0]) / max(batches1[1] - batches0[1], 1), 1)
                                     if batches0 and batches1 else None)
                if args.profile and c == max(args.connections):
                    t.join()
                    paths = sorted(log_dir.glob(f"pyspy-{db}-{workers}w-{variant}.*.txt"))
                    profile_note = "\n".join(f"      {own:5.1f}% own {tot:5.1f}% total  {name}"
                                             for name, own, tot in summarise_raw(paths))
                row.update(db=db, variant=variant, workers=workers, load_before=round(load, 2),
                           load_after=round(os.getloadavg()[0], 2))
                results.append(row)
                print(f"[{db:10s} {workers}w {variant:12s}] c={c:<3} {row['rps']:>8.1f} req/s  p50 {row['p50_ms']:.1f} ms  "
                      f"p90 {row['p90_ms']:.1f}  p99 {row['p99_ms']:.1f}  max {row['max_ms']:.0f} ms  "
                      f"errors {row['errors']} (non-2xx {row['non2xx']}, timeouts {row['timeout']})  "
                      f"server CPU {row['cpu_ms_per_request']:.2f} ms/request  "
                      f"checks per commit {row['batch_mean'] or '-'}  "
                      f"load {load:.2f}", flush=True)
                if profile_note:
                    print("    py-spy, server process(es), top functions by own time:\n" + profile_note,
                          flush=True)
        finally:
            server.stop()
        chain, reviews, entries = verify(url)
        print(f"  after {db}/{workers}w/{variant}: {chain}; {reviews} reviews, {entries} audit entries", flush=True)
        if drop is not None:
            drop()
        shutil.rmtree(work, ignore_errors=True)

    print("\n| db | variant | workers | connections | req/s | p50 ms | p99 ms | max ms | errors | server CPU ms/req | "
          "checks/commit | load before-after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['db']} | {r['variant']} | {r['workers']} | {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['max_ms']:.0f} | {r['errors']} | {r['cpu_ms_per_request']:.2f} | "
              f"{r['batch_mean'] or '-'} | {r['load_before']:.1f}-{r['load_after']:.1f} |")
    for before, after in (("per-request", "group-commit"), ("base", "group-commit")):
        pairs = []
        for db in args.db:
            for workers in args.workers:
                for c in args.connections:
                    pick = [[r for r in results if (r["db"], r["workers"], r["connections"], r["variant"]) ==
                             (db, workers, c, v)] for v in (before, after)]
                    if pick[0] and pick[1] and pick[0][0]["rps"]:
                        a, b = pick[0][0], pick[1][0]
                        pairs.append(f"  {db} {workers}w c={c}: {b['rps'] / a['rps']:.2f}x req/s  (p99 "
                                     f"{a['p99_ms']:.0f} -> {b['p99_ms']:.0f} ms; server CPU "
                                     f"{a['cpu_ms_per_request']:.2f} -> {b['cpu_ms_per_request']:.2f} ms/req)")
        if pairs:
            print(f"\n{after} / {before}:\n" + "\n".join(pairs))
    print(f"(server logs in {log_dir}; load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
