"""Export the review database's prescriptions as re-screen input.

    python -m training export-prescriptions --out reviews.parquet [--db-url URL] [--status all|pending|...]
        [--all-reviews]

The review database holds in full only the prescriptions that were queued for a pharmacist (``reviews``: the
prescription as submitted, the patient, the findings, verdict, KB and model versions); checks that were not
queued are kept as audit entries without the prescription.  Each exported row is one prescription in the input
format of ``python -m training rescreen`` (docs/rescreen.md):

- ``prescription_id``: the caller's prescription id, else ``review-<id>``;
- ``prescription_json``: the prescription with its patient, as submitted;
- ``previous_json``: the stored result ``{verdict, findings, kb_version, model_version}`` plus ``review_id`` and
  ``review_status``;
- ``synthetic``: false; ``review_id``, ``review_status``, ``created_at`` for reading the file.

By default only the newest review of each prescription id is exported (its result is the last one stored);
``--all-reviews`` exports every review.  ``.parquet`` or ``.jsonl`` by the output's suffix.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from serving.db.models import STATUSES, Review
from serving.db.session import DatabaseUnavailable, database_for, describe
from serving.settings import get_settings

BATCH = 1000


def _row(review: Review) -> dict[str, Any]:
    prescription = {k: v for k, v in (review.prescription or {}).items() if k != "patient"}
    prescription["patient"] = review.patient or {}
    pid = review.prescription_ref or f"review-{review.id}"
    if prescription.get("id") is None:
        prescription["id"] = pid
    previous = {"verdict": review.verdict, "findings": review.findings or [], "kb_version": review.kb_version,
                "model_version": review.model_version, "review_id": review.id, "review_status": review.status}
    return {
        "prescription_id": pid,
        "prescription_json": json.dumps(prescription, sort_keys=True, ensure_ascii=False),
        "previous_json": json.dumps(previous, sort_keys=True, ensure_ascii=False),
        "synthetic": False,
        "review_id": review.id,
        "review_status": review.status,
        "created_at": review.created_at.isoformat() if review.created_at else None,
    }


def export_rows(db_url: str, *, status: str = "all", latest_only: bool = True) -> Iterator[dict[str, Any]]:
    """Exported rows, newest review first."""
    if status != "all" and status not in STATUSES:
        raise ValueError(f"--status must be all or one of {', '.join(STATUSES)}, not {status!r}")
    db = database_for(db_url)
    seen: set[str] = set()
    last_id: int | None = None
    while True:
        with db.session() as session:
            stmt = select(Review).order_by(Review.id.desc()).limit(BATCH)
            if status != "all":
                stmt = stmt.where(Review.status == status)
            if last_id is not None:
                stmt = stmt.where(Review.id < last_id)
            reviews = list(session.scalars(stmt))
            rows = [_row(r) for r in reviews]
        if not reviews:
            return
        last_id = reviews[-1].id
        for row in rows:
            if latest_only:
                if row["prescription_id"] in seen:
                    continue
                seen.add(row["prescription_id"])
            yield row


def write_rows(rows: Iterator[dict[str, Any]], out: Path) -> int:
    """Write rows to ``out`` (.parquet or .jsonl); returns how many."""
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    if out.suffix == ".jsonl":
        with open(out, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({"prescription_id": row["prescription_id"],
                                     "prescription": json.loads(row["prescription_json"]),
                                     "previous": json.loads(row["previous_json"]) if row["previous_json"] else None,
                                     **{k: v for k, v in row.items()
                                        if k not in {"prescription_id", "prescription_json", "previous_json"}}},
                                    ensure_ascii=False) + "\n")
                count += 1
        return count
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("prescription_id", pa.string()), ("prescription_json", pa.string()),
                        ("previous_json", pa.string()), ("synthetic", pa.bool_()), ("review_id", pa.int64()),
                        ("review_status", pa.string()), ("created_at", pa.string())])
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[dict] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
                batch = []
        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        count += len(batch)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training export-prescriptions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output file, .parquet or .jsonl")
    parser.add_argument("--db-url", default=None, help="review database (default: RXT_DATABASE_URL)")
    parser.add_argument("--status", default="all", help=f"all (default) or one of {', '.join(STATUSES)}")
    parser.add_argument("--all-reviews", action="store_true", help="every review, not only each prescription's newest")
    args = parser.parse_args(argv)
    if args.out.suffix not in {".parquet", ".jsonl"}:
        parser.error(f"--out {args.out}: use a .parquet or .jsonl file name")
    url = args.db_url or get_settings().resolved_database_url()
    try:
        count = write_rows(export_rows(url, status=args.status, latest_only=not args.all_reviews), args.out)
    except (ValueError, DatabaseUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {count} prescriptions from {describe(url)} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
