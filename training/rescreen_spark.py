"""The Spark engine of ``python -m training rescreen --engine spark``.

The input files become one DataFrame of ``training.rescreen_core.INPUT_COLUMNS`` (Parquet through Spark's reader with
each row's ``_metadata.row_index``; JSONL through ``textFile().zipWithIndex()`` for line numbers).  Parquet input
with enough row groups is split where it lies (``spark.sql.files.maxPartitionBytes`` set from the input size: no
shuffle); otherwise the rows are repartitioned.  ``mapInPandas`` runs ``training.rescreen_core.screen_partition``
in every partition -- the body the local engine runs over all its rows: the checker is built once per Python worker
from the KB file and model folder the driver sent with ``SparkContext.addFile`` (checked by sha256), every Arrow
batch goes through ``screen_frame``, and the task writes its own ``report/part-<n>.parquet`` and
``rejects/part-<n>.parquet`` (the ``PartWriter`` the local engine uses; renamed into place when the task is
complete).  Only a row of counts per batch comes back to the JVM, summed on the driver: one pass over the input,
no cache, no second job, no report rows through the JVM.

Progress: the Spark UI (its URL is printed; off in tests) and the console progress bar.

Run locally with ``--master local[2]`` (the default); on a cluster through ``spark-submit`` (docs/deployment.md):
there the master and resources come from spark-submit and this module only adds what the job needs; ``--out``
must be on a file system the executors write to at the same path (as the inputs).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import sys
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from serving.settings import PROJECT_ROOT
from training.rescreen_core import (
    COUNT_COLUMNS,
    INPUT_COLUMNS,
    Counts,
    InputFile,
    JobSpec,
    finish_out,
    keep_torch_out,
    screen_partition,
    write_file_rejects,
)

DEFAULT_MASTER = "local[2]"
log = logging.getLogger("training.rescreen")
# The driver JVM (local mode: also the executor) when this module starts it: the C1 compiler only and the serial
# collector.  The JVM's share of this job is reading Parquet and moving Arrow batches; full C2 compilation and
# parallel GC threads cost more CPU at start-up than they win back (benchmarks: JVM CPU to a ready session
# 15.2 -> 8.5 s).  Override with --conf spark.driver.extraJavaOptions=...; not applied under spark-submit.
DRIVER_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
MIN_SPLIT_BYTES = 64 * 1024


def session(master: str | None = None, *, app_name: str = "rxtriage-rescreen", progress: bool = True,
            conf: dict | None = None, java_options: str = ""):
    """A SparkSession for the job.  Under spark-submit (``PYSPARK_GATEWAY_PORT`` set) the submitted master and
    settings are kept; otherwise ``master`` (default ``local[2]``).  Executors run this interpreter with the
    project on their ``PYTHONPATH`` (on a cluster: install the project into the executors' Python instead)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    path = os.environ.get("PYTHONPATH", "")
    if str(PROJECT_ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), path) if p)
    builder = SparkSession.builder.appName(app_name)
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master or DEFAULT_MASTER)
    settings = {
        "spark.driver.extraJavaOptions": f"{DRIVER_JAVA_OPTIONS} {java_options}".strip(),
        "spark.ui.showConsoleProgress": "true" if progress else "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.executorEnv.PYTHONPATH": os.environ["PYTHONPATH"],
        **(conf or {}),
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def split_bytes(files: list[InputFile], partitions: int) -> int | None:
    """``spark.sql.files.maxPartitionBytes`` that splits the input where it lies into about ``partitions`` parts,
    or None when it cannot (JSONL inputs, or fewer Parquet row groups than partitions: Spark splits a Parquet file
    only at row-group boundaries), and the rows are repartitioned instead (a shuffle)."""
    if not files or any(f.fmt != "parquet" for f in files):
        return None
    if sum(f.row_groups or 0 for f in files) < partitions:
        return None
    return max(MIN_SPLIT_BYTES, math.ceil(sum(f.size for f in files) / partitions))


def input_frame(spark, files: list[InputFile], partitions: int):
    """One DataFrame of ``INPUT_COLUMNS`` over every input file (the sources the local engine gives too), and how
    it is split ("row groups" or "repartition")."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, StringType, StructField, StructType

    natural = split_bytes(files, partitions)
    if natural:
        spark.conf.set("spark.sql.files.maxPartitionBytes", str(natural))
    frames = []
    for f in files:
        if f.fmt == "parquet":
            df = spark.read.parquet(Path(f.path).as_uri())
            cols = [F.concat(F.lit(f"{f.path}#row="), F.col("_metadata.row_index").cast("string")).alias("source"),
                    F.lit(None).cast("string").alias("line")]
            for name in ("prescription_id", "prescription_json", "previous_json"):
                cols.append((F.col(name).cast("string") if name in f.columns else F.lit(None).cast("string"))
                            .alias(name))
            cols.append((F.col("synthetic").cast("boolean") if "synthetic" in f.columns
                         else F.lit(None).cast("boolean")).alias("synthetic"))
            frames.append(df.select(*cols))
        else:
            source = f.path
            lines = spark.sparkContext.textFile(Path(f.path).as_uri()).zipWithIndex().map(
                lambda pair, source=source: (f"{source}:{pair[1] + 1}", pair[0], None, None, None, None))
            schema = StructType([StructField(c, BooleanType() if c == "synthetic" else StringType(), True)
                                 for c in INPUT_COLUMNS])
            frames.append(spark.createDataFrame(lines, schema))
    if not frames:
        return None, None
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    if natural:
        return frame, "row groups"
    return frame.repartition(partitions), "repartition"


def _task(batches, spec: JobSpec, out: str):
    """``mapInPandas`` body: this task's part of the output (named by its partition, so a retry replaces it)."""
    from pyspark import TaskContext

    keep_torch_out()  # a Python worker of this job: spaCy need not pull in torch (see keep_torch_out)
    yield from screen_partition(batches, spec, Path(out), f"part-{TaskContext.get().partitionId():05d}")


def class_archive(folder: Path | None) -> tuple[str, Path | None, Path | None]:
    """JVM options for a class-data archive of Spark's classes in ``folder`` (AppCDS): (options, the file this run
    writes or None, the archive).  Most of the JVM's start-up CPU is loading and verifying Spark's ~15,000 classes;
    a JVM that maps them from an archive reaches a ready session with about half the CPU (benchmarks:
    3.9 instead of 8 CPU-s).  The first run on a machine writes the archive when its JVM exits
    (``-XX:ArchiveClassesAtExit``; :meth:`SessionStart.stop` waits for that and moves it into place, so no run
    maps a half-written file); later runs map it.  The key names the Spark version, the ``java`` binary and the
    JVM options: another JVM or Spark makes a new archive (the JVM itself also refuses an archive that does not
    match its class path, and then runs without one)."""
    if folder is None or "PYSPARK_GATEWAY_PORT" in os.environ:
        return "", None, None
    import pyspark

    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java or not Path(java).exists():
        return "", None, None
    java = Path(java).resolve()
    key = hashlib.sha256(f"{pyspark.__version__}|{java}|{java.stat().st_mtime_ns}|{DRIVER_JAVA_OPTIONS}"
                         .encode()).hexdigest()[:16]
    final = Path(folder) / f"spark-{pyspark.__version__}-{key}.jsa"
    quiet = "-Xlog:cds=off -Xlog:cds+dynamic=off"
    if final.is_file():
        return f"-XX:SharedArchiveFile={final} {quiet}", None, final
    Path(folder).mkdir(parents=True, exist_ok=True)
    tmp = Path(folder) / f"_tmp-{final.name}.{os.getpid()}"
    return f"-XX:ArchiveClassesAtExit={tmp} {quiet}", tmp, final


class SessionStart:
    """Starts the SparkSession in a thread, so the JVM starts while the driver loads its checker.  With
    ``archive_dir`` the JVM maps (or, the first time, writes) the class-data archive of :func:`class_archive`."""

    def __init__(self, master: str | None = None, *, progress: bool = True, conf: dict | None = None,
                 archive_dir: Path | None = None):
        self.spark = self.error = None
        self.seconds = 0.0
        conf = dict(conf or {})
        # a JVM started with other options is not ours to archive
        options, self.archive_tmp, self.archive = (
            class_archive(archive_dir) if "spark.driver.extraJavaOptions" not in conf else ("", None, None))
        self.archive_state = "none" if self.archive is None else ("writing" if self.archive_tmp else "mapped")
        self._thread = threading.Thread(target=self._run, args=(master, progress, conf, options), daemon=True,
                                        name="spark-session-start")
        self._thread.start()

    def _run(self, master, progress, conf, options):
        started = time.perf_counter()
        try:
            self.spark = session(master, progress=progress, conf=conf, java_options=options)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of result()
            self.error = exc
        self.seconds = time.perf_counter() - started

    def result(self):
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.spark

    def stop(self) -> None:
        self._thread.join()
        if self.spark is None:
            return
        self.spark.stop()
        if self.archive_tmp is not None:
            self._write_archive()

    def _write_archive(self) -> None:
        """The JVM writes the archive when it exits: end it (it exits when its stdin closes), wait, move the file
        into place.  The next session in this process starts a new JVM."""
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        proc = getattr(gateway, "proc", None)
        if gateway is None or proc is None:
            return
        try:
            gateway.shutdown()
        except Exception as exc:  # noqa: BLE001 - the connection may be gone already; the JVM still exits on EOF
            log.debug("py4j gateway shutdown: %s", exc)
        SparkContext._gateway = SparkContext._jvm = None
        try:
            proc.stdin.close()
            proc.wait(timeout=600)
        except Exception:  # noqa: BLE001 - no archive this time; the next run tries again
            self.archive_tmp.unlink(missing_ok=True)
            return
        if self.archive_tmp.is_file() and self.archive_tmp.stat().st_size > 0 and proc.returncode == 0:
            os.replace(self.archive_tmp, self.archive)
        else:
            self.archive_tmp.unlink(missing_ok=True)


def run_spark(files: list[InputFile], file_rejects: list[dict], spec: JobSpec, out: Path, *,
              master: str | None = None, partitions: int | None = None, batch_rows: int = 2000,
              progress: bool = True, conf: dict | None = None, spark=None,
              start_seconds: float | None = None) -> tuple[Counts, dict]:
    """Screen ``files`` on Spark, write ``<out>/report`` and ``<out>/rejects``; returns the counts and what ran.
    ``spark``: a session to use (not stopped here; ``start_seconds`` says what starting it took)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    own = spark is None
    started = time.perf_counter()
    if own:
        spark = session(master, progress=progress, conf=spark_conf(batch_rows, conf))
        start_seconds = time.perf_counter() - started
    job_started = time.perf_counter()
    try:
        sc = spark.sparkContext
        if sc.uiWebUrl:
            print(f"rescreen: Spark UI at {sc.uiWebUrl}", file=sys.stderr)
        out = Path(out).resolve()
        counts = Counts(rejected_inputs=len(file_rejects))
        write_file_rejects(out, file_rejects)
        info = {"engine": "spark", "master": sc.master, "spark_version": spark.version,
                "spark_start_seconds": round(start_seconds or 0.0, 3)}
        frame, split = input_frame(spark, files, partitions or max(2, sc.defaultParallelism * 4))
        if frame is None:
            finish_out(out)
            return counts, {**info, "partitions": 0, "spark_job_seconds": 0.0}
        info["partitions"] = partitions or max(2, sc.defaultParallelism * 4)
        info["split"] = split  # "row groups": Spark's file splits (about that many); "repartition": exactly
        sc.addFile(spec.kb_path)
        if spec.model_folder:
            sc.addFile(spec.model_folder, recursive=True)
        shipped = replace(spec, shipped=True)
        schema = StructType([StructField(c, LongType(), False) for c in COUNT_COLUMNS])
        totals = frame.mapInPandas(partial(_task, spec=shipped, out=str(out)), schema).agg(
            *[F.sum(c).alias(c) for c in COUNT_COLUMNS]).collect()[0]
        counts.add({c: totals[c] for c in COUNT_COLUMNS})
        finish_out(out)
        info["spark_job_seconds"] = round(time.perf_counter() - job_started, 3)
        return counts, info
    finally:
        if own:
            spark.stop()


def spark_conf(batch_rows: int, conf: dict | None = None) -> dict:
    return {"spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows), **(conf or {})}
