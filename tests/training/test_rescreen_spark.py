"""The Spark engine (local[2], UI off, few partitions) writes what the local loop writes, row for row, with the
DDI model resolved from the registry once on the driver and shipped to the executors.

One test only: a JVM start costs tens of seconds on this machine."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.training.test_rescreen import inputs, job_settings  # noqa: F401 - fixtures
from training import rescreen, rx_synth

SPARK_TEST_CONF = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4",
                   "spark.ui.showConsoleProgress": "false"}


def _sorted(folder):
    frame = pd.read_parquet(folder)
    return frame.sort_values(["source", "prescription_id"], na_position="first").reset_index(drop=True)


@pytest.mark.slow
def test_spark_and_the_local_loop_give_the_same_rows(job_settings, inputs, ddi_settings, tmp_path):  # noqa: F811
    settings = job_settings.model_copy(update={"mlflow_tracking_uri": ddi_settings.resolved_tracking_uri()})
    synth = tmp_path / "synth.jsonl"
    rx_synth.write(synth, 300, seed=7, invalid_share=0.03)
    paths = [str(inputs["jsonl"]), str(inputs["parquet"]), str(inputs["missing"]), str(synth)]
    runs = {}
    for engine in ("local", "spark"):
        runs[engine] = rescreen.run("current", paths, tmp_path / engine, settings=settings, engine=engine,
                                    ddi_model="models:/ddi-severity@champion", progress=False, partitions=4,
                                    batch_rows=64, spark_conf=SPARK_TEST_CONF, spark_class_archive=False)
    local, spark = runs["local"], runs["spark"]
    assert spark["engine"] == "spark" and spark["master"] == "local[2]" and spark["partitions"] == 4
    assert spark["split"] == "repartition"  # JSONL inputs: no row groups to split at
    for key in ("rows", "screened", "changed", "newly_flagged", "rejected_rows", "rejected_inputs", "kb_version",
                "model_version"):
        assert local[key] == spark[key], key
    assert spark["model_version"] == "1" and spark["rows"] == 8 + 3 + 300
    report_local, report_spark = _sorted(tmp_path / "local" / "report"), _sorted(tmp_path / "spark" / "report")
    assert len(report_local) == spark["changed"] > 300 * 0.9
    pd.testing.assert_frame_equal(report_local, report_spark)
    assert set(report_spark.new_model_version) == {"1"}
    rejects_local, rejects_spark = _sorted(tmp_path / "local" / "rejects"), _sorted(tmp_path / "spark" / "rejects")
    pd.testing.assert_frame_equal(rejects_local, rejects_spark)
    assert len(rejects_spark) == spark["rejected_rows"] + spark["rejected_inputs"]
    assert rejects_spark.reason.notna().all()


@pytest.mark.slow
def test_parquet_split_at_its_row_groups_gives_the_same_rows(job_settings, rx_checker, tmp_path):  # noqa: F811
    """The benchmark's path: a Parquet file with enough row groups is split where it lies (no shuffle); every task
    writes its own part; the rows are those of the loop."""
    import pyarrow.parquet as pq

    data = tmp_path / "synth.parquet"
    rx_synth.write(data, 4000, seed=8, invalid_share=0.03)
    pq.write_table(pq.read_table(data), data, row_group_size=400)  # 10 row groups, ~190 kB: 3-4 splits
    runs = {engine: rescreen.run("current", [str(data)], tmp_path / engine, settings=job_settings, engine=engine,
                                 progress=False, partitions=4, batch_rows=500, spark_conf=SPARK_TEST_CONF,
                                 spark_class_archive=False)
            for engine in ("local", "spark")}
    assert runs["spark"]["split"] == "row groups"
    for key in ("rows", "screened", "changed", "newly_flagged", "rejected_rows"):
        assert runs["local"][key] == runs["spark"][key], key
    assert runs["spark"]["rows"] == 4000 and runs["spark"]["rejected_rows"] > 0
    parts = sorted(p.name for p in (tmp_path / "spark" / "report").iterdir())
    assert len(parts) > 1 and all(p.startswith("part-") for p in parts)  # one per task, nothing left hidden
    for folder in ("report", "rejects"):
        pd.testing.assert_frame_equal(_sorted(tmp_path / "local" / folder), _sorted(tmp_path / "spark" / folder))
