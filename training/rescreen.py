"""Re-screen stored prescriptions against a knowledge-base version (and optionally a DDI model version).

    python -m training rescreen --kb <kb-version|current|path> [--ddi-model <uri>] --input <files/dirs>...
        [--engine local|spark] --out <dir> [--queue] [--db-url URL]

When a KB row or the risk model changes, this says which stored prescriptions now get another verdict or other
findings than the result stored with them, and (``--queue``) puts the newly flagged ones in the pharmacists'
review queue.  See docs/rescreen.md for the formats.

One code path with the online service: every batch of rows goes through ``training.rescreen_core.screen_frame``
with a checker built by ``serving.components.load_checker`` (the KB artefact + the optional DDI predictor from
``serving.components.load_ddi_predictor``), built once per process (``checker_for``).  The local engine
(``rescreen_core.run_local``) calls it batch by batch in this process; the Spark engine
(``training.rescreen_spark``) calls it from ``mapInPandas`` in every executor.  Both write the same files:

- ``<out>/report/*.parquet``: every prescription whose verdict or findings changed against its stored previous
  result (or that had none), with old/new KB and model versions, old/new verdict, added/removed findings;
- ``<out>/rejects/*.parquet``: every input file that is missing or unreadable and every row that cannot be read
  or fails validation, with the reason (nothing is dropped silently);
- ``<out>/queued.parquet`` (with ``--queue``): what happened to each newly flagged prescription;
- ``<out>/summary.json``: counts, versions, engine, time.

Exit status: 0 done; 1 done, but some inputs were missing/unreadable or some queueing failed (named on stderr
and in the files); 2 nothing done (unknown KB version, unknown model, bad arguments).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from prescription_check import Checker, Prescription
from serving.db.session import DatabaseUnavailable, database_for, describe
from serving.review_queue import ReviewError, record_check_once
from serving.settings import Settings, get_settings
from training.rescreen_core import (  # noqa: F401 - re-exported: the job's public names
    INPUT_COLUMNS,
    QUEUED_FILE,
    REJECT_COLUMNS,
    REJECTS_DIR,
    REPORT_COLUMNS,
    REPORT_DIR,
    RESULT_COLUMNS,
    SUMMARY_FILE,
    Counts,
    JobSpec,
    RescreenError,
    build_spec,
    check_out,
    checker_for,
    expand_inputs,
    finding_key,
    kb_version_of,
    keep_torch_out,
    prepare_out,
    resolve_kb,
    run_local,
    screen_frame,
    screen_partition,
)
from training.rescreen_spark import SessionStart, run_spark
from training.rescreen_spark import spark_conf as spark_conf_of

log = logging.getLogger("training.rescreen")


# --- queueing --------------------------------------------------------------------------------------------


def queue_key(prescription_id: str, kb_version: str, model_version: str | None) -> str:
    """The Idempotency-Key of a re-screen's review: one per prescription, KB version and model version."""
    key = f"rescreen:{prescription_id}:{kb_version}:{model_version or 'rules-only'}"
    if len(key) <= 200 and key.isprintable():
        return key
    return "rescreen:sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass
class QueueCounts:
    queued: int = 0
    already_queued: int = 0
    failed: int = 0


def _queue_one(item: dict, spec: JobSpec, checker: Checker, db, actor: str, counts: QueueCounts,
               down: str | None) -> dict:
    key = queue_key(item["prescription_id"], spec.kb_version, spec.model_version)
    outcome = {"prescription_id": item["prescription_id"], "source": item["source"], "idempotency_key": key,
               "outcome": None, "review_id": None, "audit_id": None, "reason": None}
    if down is not None:  # the database went away: the rest is listed as not queued (a rerun queues them)
        counts.failed += 1
        return {**outcome, "outcome": "not_queued", "reason": down}
    try:
        rx = Prescription.model_validate_json(item["prescription_json"])
        result = checker.check(rx).model_dump(mode="json")
        done = record_check_once(db, prescription=rx.model_dump(mode="json"), result=result, actor=actor,
                                 queue_min_severity=spec.queue_min_severity, idempotency_key=key)
    except DatabaseUnavailable as exc:
        counts.failed += 1
        return {**outcome, "outcome": "not_queued", "reason": f"review database unavailable: {exc}"}
    except (ReviewError, ValidationError) as exc:
        counts.failed += 1
        return {**outcome, "outcome": "failed", "reason": (getattr(exc, "detail", None) or str(exc))[:500]}
    if done.replayed:
        counts.already_queued += 1
    else:
        counts.queued += 1
    return {**outcome, "outcome": "already_queued" if done.replayed else "queued",
            "review_id": done.body.get("review_id"), "audit_id": done.body.get("audit_id")}


def queue_newly_flagged(out: Path, spec: JobSpec, checker: Checker, db_url: str, actor: str, *,
                        progress: bool = True) -> QueueCounts:
    """Put every newly flagged prescription of ``<out>/report`` in the review queue, through the service's own
    ``record_check_once`` (review + audit entry in one transaction) keyed by :func:`queue_key`, so a rerun
    queues nothing twice.  Writes ``<out>/queued.parquet``: one row per prescription with its outcome."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from tqdm import tqdm

    dataset = ds.dataset(str(out / REPORT_DIR), format="parquet")
    wanted = ds.field("newly_flagged") == True
    db = database_for(db_url)
    counts = QueueCounts()
    rows: list[dict] = []
    down: str | None = None
    with tqdm(total=dataset.count_rows(filter=wanted), desc="queue", unit="rx", disable=not progress,
              mininterval=1.0) as bar:
        for batch in dataset.to_batches(columns=["prescription_id", "source", "prescription_json"], filter=wanted):
            for item in batch.to_pylist():
                rows.append(_queue_one(item, spec, checker, db, actor, counts, down))
                down = down or (rows[-1]["reason"] if rows[-1]["outcome"] == "not_queued" else None)
                bar.update(1)
    schema = pa.schema([("prescription_id", pa.string()), ("source", pa.string()), ("idempotency_key", pa.string()),
                        ("outcome", pa.string()), ("review_id", pa.int64()), ("audit_id", pa.int64()),
                        ("reason", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / QUEUED_FILE)
    return counts


# --- the command -----------------------------------------------------------------------------------------


def run(kb: str, inputs: list[str], out: Path, *, ddi_model: str | None = None, engine: str = "local",
        queue: bool = False, db_url: str | None = None, actor: str = "rescreen", settings: Settings | None = None,
        batch_rows: int = 2000, progress: bool = True, overwrite: bool = False, master: str | None = None,
        partitions: int | None = None, spark_conf: dict | None = None, spark_class_archive: bool = True) -> dict:
    """The job (see the module docstring); returns the summary it writes to ``<out>/summary.json``."""
    settings = settings or get_settings()
    if engine not in ("local", "spark"):
        raise RescreenError(f"--engine must be local or spark, not {engine!r}")
    started = time.perf_counter()
    out = Path(out)
    check_out(out, overwrite)
    # Spark: the JVM starts in a thread while this process resolves the versions and loads its checker (both take
    # seconds; on two cores they overlap instead of adding up)
    starting = (SessionStart(master, progress=progress, conf=spark_conf_of(batch_rows, spark_conf),
                             archive_dir=settings.work_dir / "spark-cds" if spark_class_archive else None)
                if engine == "spark" else None)
    try:
        spec, checker = build_spec(kb, ddi_model, settings)
        prepare_out(out, overwrite)
        files, file_rejects = expand_inputs(inputs)
        for reject in file_rejects:
            print(f"rescreen: {reject['reason']}", file=sys.stderr)
        screen_started = time.perf_counter()
        if starting is None:
            counts = run_local(files, file_rejects, spec, checker, out, batch_rows=batch_rows, progress=progress)
            engine_info: dict = {"engine": "local", "batch_rows": batch_rows}
        else:
            spark = starting.result()
            counts, engine_info = run_spark(files, file_rejects, spec, out, partitions=partitions,
                                            batch_rows=batch_rows, progress=progress, spark=spark,
                                            start_seconds=starting.seconds)
        screen_seconds = time.perf_counter() - screen_started
    finally:
        if starting is not None:
            stopping = time.perf_counter()
            starting.stop()
            stop_seconds = time.perf_counter() - stopping
    if starting is not None:
        # "writing": this run's JVM wrote the class-data archive at its end (stop seconds), later runs map it
        engine_info.update(spark_class_archive=starting.archive_state, spark_stop_seconds=round(stop_seconds, 3))
    summary: dict[str, Any] = {
        **engine_info,
        "kb": kb, "kb_version": spec.kb_version, "kb_path": spec.kb_path,
        "ddi_model": ddi_model, "model_version": spec.model_version,
        "inputs": inputs, "input_files": [f.path for f in files], **asdict(counts),
        "screen_seconds": round(screen_seconds, 3),
        "rows_per_second": round(counts.rows / screen_seconds, 1) if screen_seconds > 0 else None,
    }
    if queue:
        url = db_url or settings.resolved_database_url()
        q = queue_newly_flagged(out, spec, checker, url, actor, progress=progress)
        summary["queue"] = {"database": describe(url), **asdict(q)}
    summary["seconds"] = round(time.perf_counter() - started, 3)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training rescreen", description=__doc__.splitlines()[0])
    parser.add_argument("--kb", required=True, help="KB version (kb-<16 hex>), 'current', or a KB artefact file")
    parser.add_argument("--ddi-model", default=None,
                        help="DDI model URI (models:/ddi-severity@champion, models:/ddi-severity/3, or a folder); "
                             "without it the re-screen is rules-only")
    parser.add_argument("--input", nargs="+", required=True, help=".parquet / .jsonl files or folders of them")
    parser.add_argument("--engine", choices=["local", "spark"], default="local")
    parser.add_argument("--out", type=Path, required=True, help="output folder (report/, rejects/, summary.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    parser.add_argument("--queue", action="store_true", help="queue the newly flagged ones for pharmacists")
    parser.add_argument("--db-url", default=None, help="review database (default: RXT_DATABASE_URL)")
    parser.add_argument("--actor", default="rescreen", help="who the audit entries name (default: rescreen)")
    parser.add_argument("--batch-rows", type=int, default=2000, help="rows per batch (Arrow batch in Spark)")
    parser.add_argument("--master", default=None,
                        help="Spark master (default: local[2]; under spark-submit, the one it was given)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="Spark partitions of the input (default: 4 x default parallelism)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    conf = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--conf {item!r}: expected KEY=VALUE")
        conf[key] = value
    try:
        summary = run(args.kb, args.input, args.out, ddi_model=args.ddi_model, engine=args.engine, queue=args.queue,
                      db_url=args.db_url, actor=args.actor, batch_rows=args.batch_rows,
                      progress=not args.no_progress, overwrite=args.overwrite, master=args.master,
                      partitions=args.partitions, spark_conf=conf)
    except RescreenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    queue = summary.get("queue")
    print(f"re-screened {summary['screened']} of {summary['rows']} rows with {summary['kb_version']}"
          f" / model {summary['model_version'] or 'none (rules-only)'} on {summary['engine']}: "
          f"{summary['changed']} changed, {summary['newly_flagged']} newly flagged, "
          f"{summary['rejected_rows']} rows and {summary['rejected_inputs']} inputs rejected "
          f"({summary['rows_per_second']} rows/s)"
          + (f"; queued {queue['queued']}, already queued {queue['already_queued']}, failed {queue['failed']}"
             if queue else "")
          + f"\nreport: {args.out / REPORT_DIR}  rejects: {args.out / REJECTS_DIR}  summary: {args.out / SUMMARY_FILE}")
    if summary["rejected_rows"]:
        print(f"rescreen: {summary['rejected_rows']} rows rejected, reasons in {args.out / REJECTS_DIR}",
              file=sys.stderr)
    failed = summary["rejected_inputs"] or (queue and queue["failed"])
    return 1 if failed else 0


if __name__ == "__main__":
    keep_torch_out()  # this process is the job's (as under python -m training rescreen)
    raise SystemExit(main())
