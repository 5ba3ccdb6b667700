"""The Spark engine of ``python -m training rescreen --engine spark``.

The input files become one DataFrame of ``training.rescreen_core.INPUT_COLUMNS`` (Parquet through Spark's reader with
each row's ``_metadata.row_index``; JSONL through ``textFile().zipWithIndex()`` for line numbers), repartitioned;
``mapInPandas`` runs ``training.rescreen_core.screen_batches`` in every partition: the checker is built once per Python
worker from the KB file and model folder the driver sent with ``SparkContext.addFile`` (checked by sha256), then
every Arrow batch goes through ``screen_frame``, the function the local engine runs.  The result is persisted
once and written as ``report/`` and ``rejects/`` (Parquet part files).

Progress: the Spark UI (its URL is printed; off in tests) and the console progress bar.

Run locally with ``--master local[2]`` (the default); on a cluster through ``spark-submit`` (docs/deployment.md):
there the master and resources come from spark-submit and this module only adds what the job needs.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from serving.settings import PROJECT_ROOT
from training.rescreen_core import (
    INPUT_COLUMNS,
    REJECT_COLUMNS,
    REJECTS_DIR,
    REPORT_COLUMNS,
    REPORT_DIR,
    RESULT_COLUMNS,
    RESULT_FIELDS,
    Counts,
    InputFile,
    JobSpec,
    screen_batches,
)

DEFAULT_MASTER = "local[2]"


def spark_schema(columns=RESULT_COLUMNS):
    from pyspark.sql.types import BooleanType, StringType, StructField, StructType

    kinds = dict(RESULT_FIELDS)
    return StructType([StructField(c, BooleanType() if kinds[c] == "bool" else StringType(), True) for c in columns])


def session(master: str | None = None, *, app_name: str = "rxtriage-rescreen", progress: bool = True,
            conf: dict | None = None):
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


def input_frame(spark, files: list[InputFile], partitions: int):
    """One DataFrame of ``INPUT_COLUMNS`` over every input file (the sources the local engine gives too)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, StringType, StructField, StructType

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
        return None
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    return frame.repartition(partitions)


def run_spark(files: list[InputFile], file_rejects: list[dict], spec: JobSpec, out: Path, *,
              master: str | None = None, partitions: int | None = None, batch_rows: int = 2000,
              progress: bool = True, conf: dict | None = None, spark=None) -> tuple[Counts, dict]:
    """Screen ``files`` on Spark, write ``<out>/report`` and ``<out>/rejects``; returns the counts and what ran."""
    import pandas as pd
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    own = spark is None
    started = time.perf_counter()
    if own:
        spark = session(master, progress=progress,
                        conf={"spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows), **(conf or {})})
    start_seconds = round(time.perf_counter() - started, 3)
    try:
        sc = spark.sparkContext
        if sc.uiWebUrl:
            print(f"rescreen: Spark UI at {sc.uiWebUrl}", file=sys.stderr)
        sc.addFile(spec.kb_path)
        if spec.model_folder:
            sc.addFile(spec.model_folder, recursive=True)
        shipped = replace(spec, shipped=True)
        partitions = partitions or max(2, sc.defaultParallelism * 4)
        counts = Counts(rejected_inputs=len(file_rejects))
        reject_schema = spark_schema(REJECT_COLUMNS)
        file_reject_frame = spark.createDataFrame(
            pd.DataFrame.from_records(file_rejects, columns=list(RESULT_COLUMNS))[list(REJECT_COLUMNS)]
            if file_rejects else [], reject_schema)
        frame = input_frame(spark, files, partitions)
        if frame is None:
            spark.createDataFrame([], spark_schema(REPORT_COLUMNS)).write.mode("overwrite").parquet(
                str(out / REPORT_DIR))
            file_reject_frame.coalesce(1).write.mode("overwrite").parquet(str(out / REJECTS_DIR))
            return counts, {"engine": "spark", "master": sc.master, "partitions": 0,
                            "spark_start_seconds": start_seconds}
        results = frame.mapInPandas(partial(screen_batches, spec=shipped), spark_schema()).persist(
            StorageLevel.MEMORY_AND_DISK)
        try:
            totals = results.agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum(F.when(F.col("status") == "screened", 1).otherwise(0)).alias("screened"),
                F.sum(F.when(F.col("changed"), 1).otherwise(0)).alias("changed"),
                F.sum(F.when(F.col("newly_flagged"), 1).otherwise(0)).alias("newly_flagged"),
            ).collect()[0]
            counts.rows = int(totals["rows"])
            counts.screened = int(totals["screened"] or 0)
            counts.changed = int(totals["changed"] or 0)
            counts.newly_flagged = int(totals["newly_flagged"] or 0)
            counts.rejected_rows = counts.rows - counts.screened
            report = results.where((F.col("status") == "screened") & F.col("changed")).select(*REPORT_COLUMNS)
            report.write.mode("overwrite").parquet(str(out / REPORT_DIR))
            rejects = results.where(F.col("status") == "rejected").select(*REJECT_COLUMNS)
            file_reject_frame.unionByName(rejects).coalesce(1).write.mode("overwrite").parquet(str(out / REJECTS_DIR))
        finally:
            results.unpersist()
        return counts, {"engine": "spark", "master": sc.master, "partitions": partitions,
                        "spark_version": spark.version, "spark_start_seconds": start_seconds,
                        "spark_job_seconds": round(time.perf_counter() - started - start_seconds, 3)}
    finally:
        if own:
            spark.stop()
