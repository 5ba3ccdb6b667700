"""Benchmark of the review-queue storage (not a test): what recording a check, an audit entry or a decision
costs, on SQLite (embedded default) and PostgreSQL, side by side.

    .venv/bin/python benchmarks/review_queue.py [--n 500] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                                [--threads 4]

Measures (each in its own fresh database / PostgreSQL schema):
- ``record_check``: a flagged check stored as a pending review + findings + audit entry, one transaction
  each (what ``POST /v1/prescriptions/check`` adds to the checker's own time), single thread and
  ``--threads`` threads;
- ``audit pass``: the light audit entry of a check that is not queued;
- ``decide``: a decision (conditional update + audit entry) per transaction;
- ``verify``: audit entries verified per second by ``verify_chain``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from urllib.parse import quote

from sqlalchemy import create_engine

from serving import audit, reviews
from serving.db import Database

FINDINGS = [
    {"rule_id": "DDI-CURATED", "category": "interaction", "severity": "major", "drugs": ["warfarin", "aspirin"],
     "message": "warfarin + aspirin: additive bleeding risk", "evidence": {"pair": "aspirin|warfarin"},
     "source": "FDA label: Warfarin; 7 DRUG INTERACTIONS", "action": "avoid", "predicted": False,
     "probability": None},
    {"rule_id": "AGE-ASPIRIN", "category": "age", "severity": "minor", "drugs": ["aspirin"], "message": "m",
     "evidence": {}, "source": "AGS Beers 2023", "action": "", "predicted": False, "probability": None},
]
RX = {"id": "rx", "prescriber_id": "dr", "patient": {"age_years": 70, "allergies": [], "conditions": []},
      "items": [{"drug": d, "dose": 5, "unit": "mg", "frequency": "daily"}
                for d in ("warfarin", "aspirin", "metformin", "atorvastatin", "lisinopril")]}
FLAGGED = {"verdict": "review", "findings": FINDINGS, "kb_version": "kb-bench", "model_version": None,
           "items": []}
PASSED = {"verdict": "pass", "findings": [], "kb_version": "kb-bench", "model_version": None, "items": []}


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.0f}/s  ({seconds / n * 1000:6.2f} ms each)"


def run(db: Database, n: int, threads: int) -> dict[str, float]:
    out: dict[str, float] = {}

    def store(k: int, result: dict) -> None:
        for _ in range(k):
            with db.session() as s:
                reviews.record_check(s, prescription=RX, result=result, actor="prescriber:bench",
                                     queue_min_severity="moderate")

    t = time.perf_counter()
    store(n, FLAGGED)
    out["record_check (1 thread)"] = n / (time.perf_counter() - t)
    per = max(1, n // threads)
    pool = [threading.Thread(target=store, args=(per, FLAGGED)) for _ in range(threads)]
    t = time.perf_counter()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    out[f"record_check ({threads} threads)"] = per * threads / (time.perf_counter() - t)
    t = time.perf_counter()
    store(n, PASSED)
    out["audit pass (1 thread)"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for rid in range(1, n + 1):
        reviews.decide(db, rid, decision="reject", reason_code="unsafe_interaction", actor="pharmacist:bench")
    out["decide (1 thread)"] = n / (time.perf_counter() - t)
    with db.session() as s:
        t = time.perf_counter()
        result = audit.verify_chain(s)
        out["verify_chain entries"] = result.checked / (time.perf_counter() - t)
        assert result.ok, result
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pg", default=os.environ.get("RXT_TEST_PG_URL",
                                                      "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        db.ensure_ready()
        results["sqlite"] = run(db, args.n, args.threads)
        db.dispose()
    schema = f"rxt_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in args.pg else "?"
        db = Database(f"{args.pg}{sep}options={quote(f'-csearch_path={schema}')}")
        db.ensure_ready()
        results["postgresql"] = run(db, args.n, args.threads)
        db.dispose()
    except Exception as exc:  # noqa: BLE001 - report and carry on with SQLite only
        print(f"PostgreSQL skipped: {exc.__class__.__name__}: {str(exc)[:200]}")
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()
    load = os.getloadavg()[0]
    print(f"review-queue storage, n={args.n}, load average {load:.1f} (2 shared cores)")
    names = list(results["sqlite"])
    print(f"{'operation':32s} {'sqlite':>12s} {'postgresql':>12s} {'pg/sqlite':>10s}")
    for name in names:
        a = results["sqlite"][name]
        b = results.get("postgresql", {}).get(name)
        ratio = f"{b / a:10.2f}" if b else "       n/a"
        print(f"{name:32s} {a:10.0f}/s {b if b is None else f'{b:10.0f}/s':>12} {ratio}")


if __name__ == "__main__":
    main()
