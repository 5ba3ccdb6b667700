"""Feedback data sets: versioned Parquet snapshots of what production taught us (issue 15).

    python -m training snapshot feedback  [--out DIR] [--since TIME] [--until TIME]   # triage answers + outcomes
    python -m training snapshot decisions [--out DIR] [--since TIME] [--until TIME]   # pharmacist decisions

A snapshot is a folder ``<kind>-<UTC stamp>-<sha256[:12]>/`` (default under ``<work_dir>/feedback/<kind>/``)
holding ``data.parquet`` and ``manifest.json`` (version, sha256 of the Parquet file, row counts, rows with text,
time range of the answers, model versions, the filters, the database it came from).  A training run that uses
one logs it as an MLflow dataset input (``mlflow.data``; name = the version, digest = the sha256) with
:func:`log_snapshot_input`, so "which production rows trained this model" is answered from the run.

- ``feedback`` rows: one per triage answer that has an outcome: request id, answer and outcome times, the model
  version that answered, text sha256, the text only where it was kept (consent + RXT_FEEDBACK_KEEP_TEXT), the
  prediction (top center, confidence, answered center, urgency, hand-off), the outcome (actual center, clinician
  urgency).
- ``decisions`` rows: one per decided review: times, verdict, KB and DDI-model versions, the pharmacist's
  decision and reason code, the findings (rule id, category, severity) and the normalised drug names, for the DDI
  model and the alert tiers.  The patient block and the pharmacist's free-text note are not exported.

:func:`time_split` cuts a feedback snapshot by time (older rows train, the newest ``test_fraction`` test):
``training.triage_train --feedback DIR`` merges the training part with the public sources and reports the test
part beside the usual held-out figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from serving.db.models import Review, TriageOutcome, TriageRecord
from serving.db.session import describe, session_scope
from serving.settings import Settings, get_settings

KINDS = ("feedback", "decisions")
DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"
FORMAT = 1


class SnapshotError(ValueError):
    pass


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _iso(value) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if getattr(value, "tzinfo", None) is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def feedback_frame(session, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    q = select(TriageRecord, TriageOutcome).join(TriageOutcome, TriageOutcome.request_id == TriageRecord.request_id)
    if since is not None:
        q = q.where(TriageRecord.created_at >= since)
    if until is not None:
        q = q.where(TriageRecord.created_at < until)
    rows = []
    for rec, out in session.execute(q.order_by(TriageRecord.created_at, TriageRecord.request_id)):
        rows.append({
            "request_id": rec.request_id, "answered_at": _iso(rec.created_at), "outcome_at": _iso(out.recorded_at),
            "model_version": rec.model_version, "taxonomy_version": rec.taxonomy_version,
            "text_sha256": rec.text_sha256, "text": rec.text, "consent": bool(rec.consent),
            "language": rec.language, "text_chars": int(rec.text_chars), "latin_share": float(rec.latin_share),
            "predicted_center": rec.predicted_center, "confidence": float(rec.confidence),
            "answered_center": rec.answered_center, "predicted_urgency": rec.urgency,
            "abstained": bool(rec.abstained), "red_flags": int(rec.red_flags),
            "actual_center": out.actual_center, "clinician_urgency": out.clinician_urgency,
        })
    columns = ["request_id", "answered_at", "outcome_at", "model_version", "taxonomy_version", "text_sha256", "text",
               "consent", "language", "text_chars", "latin_share", "predicted_center", "confidence",
               "answered_center", "predicted_urgency", "abstained", "red_flags", "actual_center", "clinician_urgency"]
    return pd.DataFrame(rows, columns=columns)


def decisions_frame(session, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    q = select(Review).where(Review.decision.is_not(None))
    if since is not None:
        q = q.where(Review.created_at >= since)
    if until is not None:
        q = q.where(Review.created_at < until)
    rows = []
    for review in session.scalars(q.order_by(Review.created_at, Review.id)):
        drugs = sorted({str(ingredient) for item in (review.normalized_items or []) if isinstance(item, dict)
                        for ingredient in (item.get("ingredients") or [])})  # ingredients, not what was written
        rows.append({
            "review_id": int(review.id), "answered_at": _iso(review.created_at), "decided_at": _iso(review.decided_at),
            "verdict": review.verdict, "max_severity": review.max_severity, "kb_version": review.kb_version,
            "model_version": review.model_version, "decision": review.decision, "reason_code": review.reason_code,
            "status": review.status,
            "findings": json.dumps([{"rule_id": f.rule_id, "category": f.category, "severity": f.severity}
                                    for f in review.finding_rows], sort_keys=True),
            "drugs": json.dumps(drugs),
        })
    columns = ["review_id", "answered_at", "decided_at", "verdict", "max_severity", "kb_version", "model_version",
               "decision", "reason_code", "status", "findings", "drugs"]
    return pd.DataFrame(rows, columns=columns)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot(kind: str, settings: Settings | None = None, out: Path | None = None, since: str | None = None,
             until: str | None = None) -> dict:
    """Write a snapshot; returns its manifest (``manifest["path"]`` is the folder)."""
    if kind not in KINDS:
        raise SnapshotError(f"unknown snapshot kind {kind!r}; one of {', '.join(KINDS)}")
    settings = settings or get_settings()
    start, end = _when(since), _when(until)
    with session_scope(settings) as session:
        frame = (feedback_frame if kind == "feedback" else decisions_frame)(session, start, end)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    staging = Path(out or settings.work_dir / "feedback" / kind) / f".{kind}-{stamp}.partial"
    staging.mkdir(parents=True, exist_ok=False)
    frame.to_parquet(staging / DATA_FILE, index=False)
    sha = sha256_file(staging / DATA_FILE)
    version = f"{kind}-{stamp}-{sha[:12]}"
    folder = staging.parent / version
    times = frame["answered_at"].dropna()
    manifest = {
        "format": FORMAT, "kind": kind, "version": version, "created_at": datetime.now(UTC).isoformat(),
        "file": DATA_FILE, "sha256": sha, "rows": int(len(frame)),
        "time_range": {"first": times.min() if len(times) else None, "last": times.max() if len(times) else None},
        "filters": {"since": since, "until": until}, "database": describe(settings.resolved_database_url()),
        "columns": list(frame.columns),
    }
    if kind == "feedback":
        manifest.update(
            rows_with_text=int(frame["text"].notna().sum()),
            model_versions={str(k): int(v) for k, v in frame["model_version"].value_counts().sort_index().items()},
            top1_accuracy=None if frame.empty else float((frame["predicted_center"] == frame["actual_center"]).mean()),
            privacy="text only for answers whose request carried feedback_consent: true while RXT_FEEDBACK_KEEP_TEXT "
                    "was on; every other row has its sha256 only",
        )
    else:
        manifest.update(decisions={str(k): int(v) for k, v in frame["decision"].value_counts().sort_index().items()})
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    staging.rename(folder)
    manifest["path"] = str(folder)
    return manifest


def load_snapshot(folder: str | Path) -> tuple[pd.DataFrame, dict]:
    """(rows, manifest) of a snapshot folder; refuses a file whose sha256 is not the manifest's."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{folder} is not a snapshot folder ({MANIFEST_FILE}: {exc})") from exc
    path = folder / manifest.get("file", DATA_FILE)
    actual = sha256_file(path)
    if actual != manifest.get("sha256"):
        raise SnapshotError(f"{path} has sha256 {actual}, the manifest says {manifest.get('sha256')}: changed "
                            "after the snapshot was taken")
    manifest["path"] = str(folder)
    return pd.read_parquet(path), manifest


def time_split(frame: pd.DataFrame, labels: list[str], test_fraction: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """Rows with kept text and a center the model routes, sorted by answer time: (older train, newer test, cut)."""
    usable = frame[frame["text"].notna() & frame["actual_center"].isin(labels)].sort_values(
        ["answered_at", "request_id"], kind="stable")
    n_test = int(round(len(usable) * test_fraction))
    if len(usable) < 4 or n_test < 1:
        return usable, usable.iloc[0:0], None
    train, test = usable.iloc[: len(usable) - n_test], usable.iloc[len(usable) - n_test:]
    return train, test, str(test["answered_at"].iloc[0])


def log_snapshot_input(frame: pd.DataFrame, manifest: dict, context: str = "training") -> None:
    """The snapshot as an MLflow dataset input of the active run (no text goes to MLflow: schema and profile only
    are logged, from the frame without its text column)."""
    import mlflow
    import mlflow.data

    dataset = mlflow.data.from_pandas(frame.drop(columns=["text"], errors="ignore"),
                                      source=str(Path(manifest["path"]) / manifest.get("file", DATA_FILE)),
                                      name=manifest["version"], digest=manifest["sha256"][:16])
    mlflow.log_input(dataset, context=context)
    mlflow.set_tags({"feedback_snapshot": manifest["version"], "feedback_snapshot_sha256": manifest["sha256"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training snapshot", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--out", type=Path, default=None, help="parent folder (default <work_dir>/feedback/<kind>)")
    parser.add_argument("--since", help="answers at or after this ISO time")
    parser.add_argument("--until", help="answers before this ISO time")
    args = parser.parse_args(argv)
    try:
        manifest = snapshot(args.kind, get_settings(), args.out, args.since, args.until)
    except (SnapshotError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    print(json.dumps(manifest, indent=2))
    return 0
