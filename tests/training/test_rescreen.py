"""The batch re-screen on the local engine: changes against stored results, rejects, idempotent queueing on the
real databases, the review-database export round trip, KB versions from MLflow, and the synthetic generator.

The Spark engine (same per-batch function, row-for-row equal output) is in test_rescreen_spark.py (slow)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from prescription_check import Prescription
from serving import audit
from serving.db import Database
from serving.db.models import Review
from serving.settings import Settings
from training import rescreen, rx_export, rx_synth

# warfarin + aspirin: a documented major interaction -> review (the same case tests/serving uses)
FLAGGED = {"id": "rx-flagged", "patient": {"age_years": 58, "sex": "female", "weight_kg": 70},
           "items": [{"drug": "warfarin", "dose": 5, "unit": "mg", "route": "oral", "frequency": "daily"},
                     {"drug": "aspirin", "dose": 75, "unit": "mg", "route": "oral", "frequency": "daily"}]}
CLEAN = {"id": "rx-clean", "patient": {"age_years": 40, "sex": "male", "weight_kg": 80},
         "items": [{"sig": "Amoxicillin 500 mg PO TID x 7 days"}]}
BLOCKED = {"patient": {"age_years": 40, "allergies": ["penicillin"]},
           "items": [{"sig": "Amoxicillin 500 mg PO TID x 7 days"}]}


def stored(checker, rx: dict) -> dict:
    """The previous result as the service stores it (verdict, findings, versions)."""
    result = checker.check(Prescription.model_validate(rx)).model_dump(mode="json")
    return {k: result[k] for k in ("verdict", "findings", "kb_version", "model_version")}


@pytest.fixture
def job_settings(tmp_path, rx_checker_settings) -> Settings:
    return Settings(work_dir=tmp_path / "var", api_keys={}, kb_path=rx_checker_settings.resolved_kb_path(),
                    database_url=f"sqlite:///{tmp_path / 'reviews.db'}")


@pytest.fixture
def inputs(tmp_path, rx_checker) -> dict:
    """A JSONL file and a Parquet file with every kind of row, and what each must give."""
    same = stored(rx_checker, FLAGGED)
    was_clean = {"verdict": "pass", "findings": [], "kb_version": "kb-0000000000000000", "model_version": None}
    extra = {**same, "findings": same["findings"] + [{"rule_id": "OLD-RULE", "category": "interaction",
                                                      "severity": "major", "drugs": ["aspirin", "warfarin"]}]}
    jsonl = tmp_path / "rx.jsonl"
    lines = [
        json.dumps({"prescription_id": "unchanged", "prescription": {**FLAGGED, "id": "unchanged"},
                    "previous": same}),
        json.dumps({"prescription_id": "now-flagged", "prescription": {**FLAGGED, "id": "now-flagged"},
                    "previous": was_clean}),
        json.dumps({"prescription": {**FLAGGED, "id": "rule-removed"}, "previous": extra}),
        json.dumps(CLEAN),  # a bare prescription: no previous result
        "{this is not json",
        json.dumps({"prescription_id": "bad-dose", "prescription": {"items": [{"drug": "warfarin", "dose": -1}]}}),
        "",
        json.dumps({"prescription_id": "bad-previous", "prescription": CLEAN, "previous": {"verdict": "maybe"}}),
    ]
    jsonl.write_text("\n".join(lines) + "\n")
    parquet = tmp_path / "rx.parquet"
    pq.write_table(pa.table({
        "prescription_id": ["pq-blocked", "pq-clean", None],
        "prescription_json": [json.dumps(BLOCKED), json.dumps({**CLEAN, "id": "pq-clean"}), json.dumps(BLOCKED)],
        "previous_json": [None, json.dumps(stored(rx_checker, {**CLEAN, "id": "pq-clean"})), None],
        "synthetic": [False, False, None],
    }), parquet)
    no_column = tmp_path / "other.parquet"
    pq.write_table(pa.table({"something": [1]}), no_column)
    return {"jsonl": jsonl, "parquet": parquet, "no_column": no_column, "missing": tmp_path / "missing.jsonl"}


def test_report_lists_changes_and_rejects_name_every_bad_row(job_settings, inputs, tmp_path, rx_checker):
    out = tmp_path / "out"
    summary = rescreen.run("current", [str(inputs[k]) for k in ("jsonl", "parquet", "no_column", "missing")], out,
                           settings=job_settings, progress=False)
    report = pd.read_parquet(out / "report").set_index("prescription_id")
    rejects = pd.read_parquet(out / "rejects")

    # unchanged rows are not reported; everything else is, with what changed
    assert "unchanged" not in report.index and "pq-clean" not in report.index
    now = report.loc["now-flagged"]
    assert (now.old_verdict, now.new_verdict, now.verdict_changed, now.newly_flagged) == ("pass", "review", True,
                                                                                          True)
    assert now.old_kb_version == "kb-0000000000000000" and now.new_kb_version == summary["kb_version"]
    assert {f["rule_id"] for f in json.loads(now.added_findings)} == {
        f["rule_id"] for f in stored(rx_checker, FLAGGED)["findings"]}
    removed = report.loc["rule-removed"]
    assert (removed.verdict_changed, removed.findings_changed, removed.newly_flagged) == (False, True, False)
    assert [f["rule_id"] for f in json.loads(removed.removed_findings)] == ["OLD-RULE"]
    assert json.loads(removed.added_findings) == []
    first = report.loc["rx-clean"]  # no previous result: reported as a first screening
    assert first.had_previous == False and pd.isna(first.old_verdict) and first.new_verdict == "pass"
    blocked = report.loc["pq-blocked"]
    assert blocked.new_verdict == "block" and blocked.newly_flagged == True
    assert json.loads(blocked.prescription_json)["id"] == "pq-blocked"
    # a row without any id gets a content-addressed one (the same in every run)
    assert any(i.startswith("sha256:") for i in report.index)

    reasons = dict(zip(rejects.source, rejects.reason))
    jsonl, pqf = str(inputs["jsonl"].resolve()), str(inputs["no_column"].resolve())
    assert "not valid JSON" in reasons[f"{jsonl}:5"]
    assert "items.0.dose" in reasons[f"{jsonl}:6"] and "greater than 0" in reasons[f"{jsonl}:6"]
    assert reasons[f"{jsonl}:7"] == "blank line"
    assert "previous result: verdict" in reasons[f"{jsonl}:8"]
    assert "has no column 'prescription_json'" in reasons[pqf]
    assert reasons[str(inputs["missing"])].endswith("not found")
    bad_dose = rejects.set_index("source").loc[f"{jsonl}:6"]
    assert "warfarin" in bad_dose.raw
    # nothing dropped: every input row is screened or rejected
    assert summary["rows"] == 8 + 3 and summary["screened"] + summary["rejected_rows"] == summary["rows"]
    assert summary["rejected_rows"] == 4 and summary["rejected_inputs"] == 2
    assert summary["changed"] == len(report) == 5


def test_cli_exit_codes_name_what_is_wrong(job_settings, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RXT_KB_PATH", str(job_settings.kb_path))
    monkeypatch.setenv("RXT_WORK_DIR", str(job_settings.work_dir))
    from serving.settings import get_settings

    get_settings.cache_clear()
    try:
        ok = rescreen.main(["--kb", "current", "--input", str(inputs["parquet"]), "--out", str(tmp_path / "a"),
                            "--no-progress"])
        assert ok == 0
        assert rescreen.main(["--kb", "current", "--input", str(inputs["parquet"]), "--out",
                              str(tmp_path / "a"), "--no-progress"]) == 2
        assert "is not empty" in capsys.readouterr().err
        # a missing input: the rest is done, the input named, exit 1
        assert rescreen.main(["--kb", "current", "--input", str(inputs["parquet"]), str(inputs["missing"]),
                              "--out", str(tmp_path / "b"), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert str(inputs["missing"]) in err and "not found" in err
        assert len(pd.read_parquet(tmp_path / "b" / "report")) == 2
        # unknown KB version, unknown model: nothing done, exit 2, named
        assert rescreen.main(["--kb", "kb-0123456789abcdef", "--input", str(inputs["parquet"]), "--out",
                              str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert "unknown KB version kb-0123456789abcdef" in err
        assert rescreen.main(["--kb", "nonsense", "--input", str(inputs["parquet"]), "--out",
                              str(tmp_path / "c")]) == 2
        assert "'nonsense' is neither a KB file" in capsys.readouterr().err
        assert rescreen.main(["--kb", "current", "--ddi-model", "models:/ddi-severity@nowhere", "--input",
                              str(inputs["parquet"]), "--out", str(tmp_path / "c")]) == 2
        assert "--ddi-model models:/ddi-severity@nowhere" in capsys.readouterr().err
        assert not (tmp_path / "c").exists()
    finally:
        get_settings.cache_clear()


def _reviews(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count(Review.id)))


def test_queueing_is_idempotent_and_the_export_round_trips(db_url, job_settings, inputs, tmp_path):
    """Queue the newly flagged ones (PostgreSQL and SQLite), rerun: nothing queued twice; export the queue and
    re-screen it with the same KB: nothing changed."""
    settings = job_settings.model_copy(update={"database_url": db_url})
    first = rescreen.run("current", [str(inputs["jsonl"]), str(inputs["parquet"])], tmp_path / "one",
                         settings=settings, queue=True, progress=False, actor="rescreen-test")
    flagged = first["newly_flagged"]
    assert flagged >= 2 and first["queue"] == {"database": first["queue"]["database"], "queued": flagged,
                                               "already_queued": 0, "failed": 0}
    db = Database(db_url)
    try:
        assert _reviews(db) == flagged
        queued = pd.read_parquet(tmp_path / "one" / "queued.parquet")
        assert set(queued.outcome) == {"queued"} and queued.review_id.notna().all()
        assert all(k.startswith("rescreen:") and first["kb_version"] in k for k in queued.idempotency_key)

        again = rescreen.run("current", [str(inputs["jsonl"]), str(inputs["parquet"])], tmp_path / "two",
                             settings=settings, queue=True, progress=False, actor="rescreen-test")
        assert again["queue"]["queued"] == 0 and again["queue"]["already_queued"] == flagged
        assert _reviews(db) == flagged
        with db.session() as session:
            assert audit.verify_chain(session).ok
            review = session.scalars(select(Review).where(Review.prescription_ref == "now-flagged")).one()
            assert (review.status, review.verdict, review.submitted_by) == ("pending", "review", "rescreen-test")
            assert review.kb_version == first["kb_version"]
    finally:
        db.dispose()

    exported = tmp_path / "queue.parquet"
    assert rx_export.main(["--db-url", db_url, "--out", str(exported)]) == 0
    table = pq.read_table(exported).to_pandas()
    assert len(table) == flagged and set(table.review_status) == {"pending"}
    round_trip = rescreen.run("current", [str(exported)], tmp_path / "three", settings=settings, progress=False)
    assert round_trip["screened"] == flagged and round_trip["changed"] == 0 and round_trip["rejected_rows"] == 0
    # the same export as JSONL reads the same way
    assert rx_export.main(["--db-url", db_url, "--out", str(tmp_path / "queue.jsonl")]) == 0
    assert rescreen.run("current", [str(tmp_path / "queue.jsonl")], tmp_path / "four", settings=settings,
                        progress=False)["changed"] == 0


@pytest.mark.slow  # an MLflow store of its own
def test_a_kb_version_is_fetched_from_mlflow(job_settings, tmp_path):
    from training.kb_build import log_to_mlflow

    kb_file = tmp_path / "kb-copy.json"
    shutil.copy(job_settings.kb_path, kb_file)
    version = rescreen.kb_version_of(kb_file)
    settings = job_settings.model_copy(update={"kb_path": tmp_path / "elsewhere" / "kb.json"})
    with pytest.raises(rescreen.RescreenError, match=f"unknown KB version {version}"):
        rescreen.resolve_kb(version, settings)
    log_to_mlflow(kb_file, json.loads(kb_file.read_text()), settings)
    found = rescreen.resolve_kb(version, settings)
    assert found.is_file() and rescreen.kb_version_of(found) == version
    assert str(found).startswith(str(settings.work_dir / "kb-cache"))


def test_synthetic_prescriptions_are_drawn_from_the_gold_set_and_marked(tmp_path, job_settings):
    gold = rx_synth.load_gold()
    gold_items = {json.dumps(i, sort_keys=True) for c in gold for i in c["prescription"]["items"]}
    gold_patients = {json.dumps(c["prescription"].get("patient") or {}, sort_keys=True) for c in gold}
    out = tmp_path / "synth.parquet"
    assert rx_synth.main(["--n", "400", "--out", str(out), "--seed", "3", "--invalid-share", "0.05"]) == 0
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 400 and all(r["synthetic"] is True and r["prescription_id"].startswith("SYNTH-3-")
                                    for r in rows)
    valid = [r for r in rows if not r["synth_from"][0].startswith("invalid:")]
    invalid = len(rows) - len(valid)
    assert 5 <= invalid <= 40
    for r in valid:
        rx = json.loads(r["prescription_json"])
        assert rx["prescriber_id"] == "synthetic" and rx["id"] == r["prescription_id"]
        assert json.dumps(rx["patient"], sort_keys=True) in gold_patients
        assert all(json.dumps(i, sort_keys=True) in gold_items for i in rx["items"]) and 1 <= len(rx["items"]) <= 4
    card = (tmp_path / "synth.parquet.DATA_CARD.md").read_text()
    assert "SYNTHETIC DATA" in card and "gold_prescriptions.jsonl" in card
    # the same seed gives the same rows; the invalid ones are rejected with reasons, the rest screened
    again = tmp_path / "again.jsonl"
    rx_synth.write(again, 400, seed=3, invalid_share=0.05)
    lines = again.read_text().splitlines()
    assert len(lines) == 400
    summary = rescreen.run("current", [str(out), str(again)], tmp_path / "out", settings=job_settings, progress=False)
    assert summary["rejected_rows"] == 2 * invalid and summary["screened"] == 2 * len(valid)
    report = pd.read_parquet(tmp_path / "out" / "report")
    assert report.synthetic.all()


def test_queueing_against_a_database_that_is_down_lists_every_row_as_not_queued(job_settings, inputs, tmp_path):
    down = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"  # nothing listens on the discard port
    summary = rescreen.run("current", [str(inputs["jsonl"]), str(inputs["parquet"])], tmp_path / "out",
                           settings=job_settings, queue=True, db_url=down, progress=False)
    flagged = summary["newly_flagged"]
    assert flagged >= 2 and summary["queue"]["failed"] == flagged and summary["queue"]["queued"] == 0
    queued = pd.read_parquet(tmp_path / "out" / "queued.parquet")
    assert len(queued) == flagged and set(queued.outcome) == {"not_queued"}
    assert queued.reason.str.contains("review database unavailable").all()


def test_a_part_appears_whole_or_not_at_all(job_settings, inputs, tmp_path):
    """Both engines write through screen_partition: a part is written under a hidden name and renamed when it is
    complete, so a failed (Spark: retried) task leaves nothing and its retry replaces the part."""
    from training.rescreen_core import finish_out, local_batches, screen_partition

    spec, checker = rescreen.build_spec("current", None, job_settings)
    files, _ = rescreen.expand_inputs([str(inputs["jsonl"])])
    batches = list(local_batches(files, 4))  # 8 lines: 2 batches
    out = tmp_path / "out"

    def lost_after_one():
        yield batches[0]
        raise RuntimeError("executor lost")

    attempt = screen_partition(lost_after_one(), spec, out, "part-00003", checker)
    first = next(attempt)
    assert int(first["rows"].iloc[0]) == 4
    assert [p.name.startswith("_tmp-part-00003") for p in (out / "report").iterdir()] == [True]
    with pytest.raises(RuntimeError, match="executor lost"):
        next(attempt)
    assert list((out / "report").iterdir()) == [] and not list((out / "rejects").glob("*"))
    for _ in range(2):  # the retry, twice: one part, not two
        counts = pd.concat(list(screen_partition(iter(batches), spec, out, "part-00003", checker)))
    assert [p.name for p in (out / "report").iterdir()] == ["part-00003.parquet"]
    assert [p.name for p in (out / "rejects").iterdir()] == ["part-00003.parquet"]
    assert counts["rows"].sum() == 8 and counts["rejected_rows"].sum() == 4
    assert len(pd.read_parquet(out / "report")) == counts["changed"].sum() == 3

    # an output without report rows still reads as an empty table with the report's columns
    empty = tmp_path / "empty"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    summary = rescreen.run("current", [str(bad)], empty, settings=job_settings, progress=False)
    assert summary["rows"] == summary["rejected_rows"] == 1
    report = pd.read_parquet(empty / "report")
    assert len(report) == 0 and tuple(report.columns) == rescreen.REPORT_COLUMNS
    finish_out(empty)  # idempotent
    assert len(pd.read_parquet(empty / "rejects")) == 1


def test_spark_input_is_split_where_it_lies_when_it_can():
    """No shuffle when the Parquet row groups give every partition rows; else a repartition."""
    from training.rescreen_core import InputFile
    from training.rescreen_spark import MIN_SPLIT_BYTES, split_bytes

    def pq_file(row_groups, size):
        return InputFile("/x.parquet", "parquet", ("prescription_json",), 10 * row_groups, row_groups, size)

    assert split_bytes([pq_file(20, 9_500_000)], 8) == 1_187_500
    assert split_bytes([pq_file(4, 4_000_000), pq_file(4, 2_000_000)], 8) == 750_000
    assert split_bytes([pq_file(1, 9_500_000)], 8) is None  # one row group: Spark could not split it
    assert split_bytes([pq_file(20, 9_500_000), InputFile("/y.jsonl", "jsonl")], 8) is None
    assert split_bytes([pq_file(20, 1000)], 8) == MIN_SPLIT_BYTES
    assert split_bytes([], 8) is None


def test_spark_class_archive_is_written_once_then_mapped(tmp_path, monkeypatch):
    import shutil as _shutil

    from training.rescreen_spark import class_archive

    if not _shutil.which("java") and not __import__("os").environ.get("JAVA_HOME"):
        if __import__("os").environ.get("CI"):
            pytest.fail("java is missing, but scripts/setup installs it and CI must run the Spark tests")
        pytest.skip("no java")  # only outside CI, on a machine where scripts/setup has not run
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert class_archive(None) == ("", None, None)
    options, writing, archive = class_archive(tmp_path / "cds")
    assert f"-XX:ArchiveClassesAtExit={writing}" in options and writing.name.startswith("_tmp-")
    assert archive.parent == writing.parent == tmp_path / "cds" and not archive.exists()
    archive.write_bytes(b"x")  # what SessionStart.stop moves into place after the JVM wrote it
    options, writing, again = class_archive(tmp_path / "cds")
    assert options.startswith(f"-XX:SharedArchiveFile={archive} ") and writing is None and again == archive
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")  # under spark-submit the JVM is started by spark-submit
    assert class_archive(tmp_path / "cds") == ("", None, None)


def test_the_checker_runs_without_torch_where_the_job_keeps_it_out(job_settings):
    """The CLI entry and the Spark workers keep torch out of the process (spaCy would import it): the checker,
    sig parser included, works without it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from training.rescreen_core import keep_torch_out\n"
        "keep_torch_out()\n"
        "from pathlib import Path\n"
        "from prescription_check import Prescription\n"
        "from serving.components import load_checker\n"
        "from serving.settings import Settings\n"
        f"checker = load_checker(Settings(kb_path=Path({str(job_settings.kb_path)!r})), model_status='rules-only')\n"
        f"result = checker.check(Prescription.model_validate({BLOCKED!r}))\n"
        "print(result.verdict, sys.modules.get('torch') is None, 'spacy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["block", "True", "True"]
