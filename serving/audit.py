"""Append-only, hash-chained audit log: every check, decision and model promotion.

Each entry stores who (``actor``), when (``ts``, ISO-8601 UTC with microseconds), what (``action`` on
``subject``), the state ``before`` and ``after`` (JSON), the previous entry's hash and its own::

    hash = sha256(canonical_json({"id", "ts", "actor", "action", "subject", "before", "after", "prev_hash"}))

with ``canonical_json`` = ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.  The
first entry's ``prev_hash`` is 64 zeros.  ``before``/``after`` are stored as the exact canonical text that was
hashed, so verification does not depend on how a driver round-trips JSON or timestamps.

Appends are serialised through the single-row ``audit_chain_head`` table: ``record`` starts by updating it
(``UPDATE ... RETURNING``), which takes the row lock in PostgreSQL (a concurrent append waits for this
transaction to commit or roll back, then sees the new head) and the write lock in SQLite (where our engines
begin every transaction with ``BEGIN IMMEDIATE``).  A unique index on ``prev_hash`` makes a fork impossible
even for a writer that bypasses this module.  Triggers refuse UPDATE and DELETE on ``audit_log``.

``verify_chain`` walks the log in id order and names the first entry whose stored hash does not match its
content, whose ``prev_hash`` does not match its predecessor, or whose id skips (a deleted entry); it also
checks that the head still points at the last entry (truncation of the tail).  ``verify_reviews`` checks the
review rows against the chain: a decision's fields are bound to its entry (``reviews.decision_audit_hash``), so
a row edited after the decision, decided without an entry or put back to pending is named.  On PostgreSQL a
trigger refuses TRUNCATE of the log and its head (migration 0002).

CLI::

    python -m serving.audit verify [--database-url URL]     # exit 0 "OK ..." / exit 1 naming the entry
    python -m serving.audit tail [-n 20] [--database-url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from serving.db.models import GENESIS_HASH, AuditChainHead, AuditEntryRow, Review
from serving.db.session import DatabaseUnavailable, database_for, describe, insert_rows
from serving.settings import get_settings

__all__ = ["AuditEntry", "VerifyResult", "append", "append_many", "canonical_entry_hash", "canonical_json", "entry_hash",
           "history", "record", "verify_chain", "verify_reviews"]

# the decision fields of a review row that its review.decision entry's ``after`` records
DECISION_FIELDS = ("status", "decision", "reason_code", "note", "version")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def format_ts(moment: datetime) -> str:
    """Fixed-width ISO-8601 in UTC (so that string order is time order)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(*, id: int, ts: str, actor: str, action: str, subject: str, before_json: str | None,
               after_json: str | None, prev_hash: str) -> str:
    payload = {
        "id": id,
        "ts": ts,
        "actor": actor,
        "action": action,
        "subject": subject,
        "before": None if before_json is None else json.loads(before_json),
        "after": None if after_json is None else json.loads(after_json),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


# json.dumps(value, ensure_ascii=False) for a str, without dumps' per-call set-up (the encoder it uses)
_string = json.encoder.encode_basestring


def canonical_entry_hash(*, id: int, ts: str, actor: str, action: str, subject: str, before_json: str | None,
                         after_json: str | None, prev_hash: str) -> str:
    """:func:`entry_hash` for ``before_json`` / ``after_json`` that are :func:`canonical_json` texts (what
    :func:`append` and :func:`append_many` store): the same digest, without parsing those texts back and
    serialising them again (``canonical_json(json.loads(t)) == t`` for a canonical text ``t``).  The payload's
    text is put together in canonical_json's key order (action, actor, after, before, id, prev_hash, subject,
    ts).  Appending runs this once per check (issue #16); :func:`verify_chain` keeps :func:`entry_hash`, which
    does not assume the stored texts are canonical."""
    if type(id) is not int:  # noqa: E721 - a bool or an int subclass would print differently
        raise TypeError("audit entry id must be an int")
    text = "".join((
        '{"action":', _string(action), ',"actor":', _string(actor),
        ',"after":', "null" if after_json is None else after_json,
        ',"before":', "null" if before_json is None else before_json,
        ',"id":', str(id), ',"prev_hash":', _string(prev_hash), ',"subject":', _string(subject),
        ',"ts":', _string(ts), "}",
    ))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts: str
    actor: str
    action: str
    subject: str
    before: dict | None
    after: dict | None
    prev_hash: str
    hash: str

    @property
    def created_at(self) -> datetime:
        return datetime.strptime(self.ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "ts": self.ts, "actor": self.actor, "action": self.action, "subject": self.subject,
            "before": self.before, "after": self.after, "prev_hash": self.prev_hash, "hash": self.hash,
        }


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.checked} audit entries, hash chain intact"
        return f"TAMPERED: entry {self.first_bad_id}: {self.reason} ({self.checked} entries checked)"


def _check_field(name: str, value: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"audit {name} must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"audit {name} is longer than {limit} characters")
    return value


_HEAD = AuditChainHead.__table__
_TAKE_HEAD = (
    _HEAD.update()
    .where(_HEAD.c.id == 1)
    .values(last_id=_HEAD.c.last_id + 1)
    .returning(_HEAD.c.last_id, _HEAD.c.last_hash)
)
_INSERT_ENTRY = AuditEntryRow.__table__.insert()
_MOVE_HEAD = _HEAD.update().where(_HEAD.c.id == 1).values(last_hash=bindparam("digest"))
# append_many's: the head taken for n entries at once (built once: a statement built per call costs more than
# its execution on SQLite)
_TAKE_HEAD_N = (
    _HEAD.update()
    .where(_HEAD.c.id == 1)
    .values(last_id=_HEAD.c.last_id + bindparam("n"))
    .returning(_HEAD.c.last_id, _HEAD.c.last_hash)
)


def record(session: Session, *, actor: str, action: str, subject: str, before: dict | None = None,
           after: dict | None = None) -> int:
    """Append one entry in the caller's transaction and return its id.

    The entry becomes visible (and the chain head moves) when the caller commits; if the caller rolls back,
    neither happens.  Concurrent appends wait for each other, so the chain never forks.
    """
    return append(session, actor=actor, action=action, subject=subject, before=before, after=after)[0]


def append(session: Session, *, actor: str, action: str, subject: str, before: dict | None = None,
           after: dict | None = None) -> tuple[int, str]:
    """:func:`record`, returning ``(id, hash)``: the hash lets a row bind itself to its entry."""
    _check_field("actor", actor, 200)
    _check_field("action", action, 100)
    _check_field("subject", subject, 300)
    before_json = None if before is None else canonical_json(before)
    after_json = None if after is None else canonical_json(after)
    # Take the chain head first: this is the statement that serialises appends (see module docstring).
    row = session.execute(_TAKE_HEAD).one_or_none()
    if row is None:
        raise RuntimeError("audit_chain_head row is missing: run the migrations (alembic upgrade head)")
    new_id, prev_hash = int(row[0]), row[1]
    ts = format_ts(datetime.now(UTC))
    digest = canonical_entry_hash(id=new_id, ts=ts, actor=actor, action=action, subject=subject,
                                  before_json=before_json, after_json=after_json, prev_hash=prev_hash)
    # plain Core statements (no ORM unit of work): this runs once per check, on the request path
    session.execute(_INSERT_ENTRY, {"id": new_id, "ts": ts, "actor": actor, "action": action, "subject": subject,
                                    "before_json": before_json, "after_json": after_json,
                                    "prev_hash": prev_hash, "hash": digest})
    session.execute(_MOVE_HEAD, {"digest": digest})
    return new_id, digest


def append_many(session: Session, entries: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Append several entries (dicts with ``actor``, ``action``, ``subject`` and optional ``before`` /
    ``after``) in the caller's transaction, in list order, with three statements whatever their number: the
    head is taken once for all of them (``last_id + n``), the entries are chained in memory and inserted at once
    (``insert_rows``: one multi-row INSERT on PostgreSQL, executemany on SQLite), and the head is moved once.  Used by the group commit of prescription checks
    (``serving.group_commit``); the chain is the same as ``n`` calls of :func:`append`.  Returns ``(id, hash)``
    per entry."""
    if not entries:
        return []
    prepared = []
    for e in entries:
        _check_field("actor", e["actor"], 200)
        _check_field("action", e["action"], 100)
        _check_field("subject", e["subject"], 300)
        before, after = e.get("before"), e.get("after")
        prepared.append((e["actor"], e["action"], e["subject"],
                         None if before is None else canonical_json(before),
                         None if after is None else canonical_json(after)))
    n = len(prepared)
    row = session.execute(_TAKE_HEAD_N, {"n": n}).one_or_none()
    if row is None:
        raise RuntimeError("audit_chain_head row is missing: run the migrations (alembic upgrade head)")
    first_id, prev_hash = int(row[0]) - n + 1, row[1]
    ts = format_ts(datetime.now(UTC))
    params, out = [], []
    for offset, (actor, action, subject, before_json, after_json) in enumerate(prepared):
        new_id = first_id + offset
        digest = canonical_entry_hash(id=new_id, ts=ts, actor=actor, action=action, subject=subject,
                                      before_json=before_json, after_json=after_json, prev_hash=prev_hash)
        params.append({"id": new_id, "ts": ts, "actor": actor, "action": action, "subject": subject,
                       "before_json": before_json, "after_json": after_json, "prev_hash": prev_hash,
                       "hash": digest})
        out.append((new_id, digest))
        prev_hash = digest
    insert_rows(session, AuditEntryRow.__table__, params)
    session.execute(_MOVE_HEAD, {"digest": prev_hash})
    return out


def _entry(row: AuditEntryRow) -> AuditEntry:
    return AuditEntry(
        id=row.id, ts=row.ts, actor=row.actor, action=row.action, subject=row.subject,
        before=None if row.before_json is None else json.loads(row.before_json),
        after=None if row.after_json is None else json.loads(row.after_json),
        prev_hash=row.prev_hash, hash=row.hash,
    )


def history(session: Session, *, subject_prefix: str | None = None, subject: str | None = None,
            action: str | None = None, until: datetime | None = None, limit: int | None = None) -> list[AuditEntry]:
    """Entries in chain (time) order, filtered by subject prefix / exact subject / action / ts <= until."""
    stmt = select(AuditEntryRow).order_by(AuditEntryRow.id)
    if subject_prefix is not None:
        escaped = subject_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(AuditEntryRow.subject.like(escaped + "%", escape="\\"))
    if subject is not None:
        stmt = stmt.where(AuditEntryRow.subject == subject)
    if action is not None:
        stmt = stmt.where(AuditEntryRow.action == action)
    if until is not None:
        stmt = stmt.where(AuditEntryRow.ts <= format_ts(until))
    if limit is not None:
        stmt = stmt.order_by(None).order_by(AuditEntryRow.id.desc()).limit(limit)
        return [_entry(r) for r in reversed(session.scalars(stmt).all())]
    return [_entry(r) for r in session.scalars(stmt)]


def verify_chain(session_or_engine: Session | Engine, *, batch: int = 5000) -> VerifyResult:
    """Recompute every hash and link; name the first entry that does not fit."""
    if isinstance(session_or_engine, Session):
        return _verify(session_or_engine, batch)
    with Session(session_or_engine) as session:
        return _verify(session, batch)


def _verify(session: Session, batch: int) -> VerifyResult:
    expected_prev, expected_id, checked, last_id = GENESIS_HASH, 1, 0, 0
    columns = (AuditEntryRow.id, AuditEntryRow.ts, AuditEntryRow.actor, AuditEntryRow.action,
               AuditEntryRow.subject, AuditEntryRow.before_json, AuditEntryRow.after_json,
               AuditEntryRow.prev_hash, AuditEntryRow.hash)
    while True:
        rows = session.execute(
            select(*columns).where(AuditEntryRow.id > last_id).order_by(AuditEntryRow.id).limit(batch)
        ).all()
        if not rows:
            break
        for r in rows:
            if r.id != expected_id:
                return VerifyResult(False, checked, r.id,
                                    f"entries {expected_id}..{r.id - 1} are missing (deleted?)")
            try:
                digest = entry_hash(id=r.id, ts=r.ts, actor=r.actor, action=r.action, subject=r.subject,
                                    before_json=r.before_json, after_json=r.after_json, prev_hash=r.prev_hash)
            except (ValueError, TypeError) as exc:
                return VerifyResult(False, checked, r.id, f"content is not valid JSON: {exc}")
            if digest != r.hash:
                return VerifyResult(False, checked, r.id,
                                    "stored hash does not match the entry's content (modified after it was written)")
            if r.prev_hash != expected_prev:
                # This entry is intact (its hash covers prev_hash), so it still names the original hash of
                # its predecessor: the predecessor was altered and re-hashed.
                if last_id:
                    return VerifyResult(False, checked - 1, last_id,
                                        f"altered and re-hashed: entry {r.id} recorded a different hash for it")
                return VerifyResult(False, checked, r.id, "first entry does not start from the genesis hash")
            checked += 1
            expected_prev, expected_id, last_id = r.hash, r.id + 1, r.id
    head = session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)).one_or_none()
    if head is None:
        return VerifyResult(False, checked, None, "audit_chain_head row is missing")
    if head.last_id != last_id or head.last_hash != expected_prev:
        return VerifyResult(False, checked, last_id + 1 if head.last_id > last_id else head.last_id,
                            f"chain head points at entry {head.last_id} but the log ends at entry {last_id} "
                            "(entries removed from the end, or the head was altered)")
    return VerifyResult(True, checked)


@dataclass(frozen=True)
class ReviewsResult:
    ok: bool
    checked: int
    problems: list[str]

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.checked} reviews agree with their audit entries"
        return "TAMPERED: " + "; ".join(self.problems[:20]) + (
            f" (and {len(self.problems) - 20} more)" if len(self.problems) > 20 else "") + \
            f" ({self.checked} reviews checked)"


def _same(a: Any, b: Any) -> bool:
    return a == b or (a in (None, "") and b in (None, ""))


def verify_reviews(session: Session, *, batch: int = 2000) -> ReviewsResult:
    """Every review row against the chain: a decided review must have its ``review.decision`` entry (the one
    whose hash it stores) and the same decision fields (status, decision, reason code, note, version, decided by,
    decided at); a pending review must have no decision entry and no decision fields.  Names each review that
    disagrees: a row changed after its decision, decided without an entry, or put back to pending."""
    entries: dict[int, AuditEntry] = {}
    for entry in history(session, action="review.decision"):
        try:
            entries[int(entry.subject.split(":", 1)[1])] = entry  # the latest decision entry per review
        except (IndexError, ValueError):
            continue
    problems: list[str] = []
    checked, last_id = 0, 0
    while True:
        rows = session.scalars(select(Review).where(Review.id > last_id).order_by(Review.id).limit(batch)).all()
        if not rows:
            break
        for review in rows:
            last_id = review.id
            checked += 1
            entry = entries.get(review.id)
            if review.status == "pending":
                if entry is not None:
                    problems.append(f"review {review.id} is pending but audit entry {entry.id} records a "
                                    f"{entry.after.get('decision') if entry.after else '?'} decision")
                elif review.decision is not None or review.decided_by is not None:
                    problems.append(f"review {review.id} is pending but carries decision fields no audit entry "
                                    "records")
                continue
            if entry is None:
                problems.append(f"review {review.id} is {review.status} but no audit entry records its decision")
                continue
            after = entry.after or {}
            differ = [name for name in DECISION_FIELDS if not _same(getattr(review, name), after.get(name))]
            if review.decided_by != entry.actor:
                differ.append("decided_by")
            if "decided_at" in after and (review.decided_at is None or format_ts(review.decided_at) != after["decided_at"]):
                differ.append("decided_at")
            if review.decision_audit_hash is not None and review.decision_audit_hash != entry.hash:
                differ.append("decision_audit_hash")
            if differ:
                problems.append(f"review {review.id}: {', '.join(differ)} disagree with audit entry {entry.id}")
        session.expunge_all()
    return ReviewsResult(not problems, checked, problems)


# --- CLI ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.audit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_verify = sub.add_parser("verify", help="verify the hash chain; exit 1 naming the first tampered entry")
    p_tail = sub.add_parser("tail", help="print the last entries as JSON lines")
    p_tail.add_argument("-n", type=int, default=20)
    for p in (p_verify, p_tail):
        p.add_argument("--database-url", default=None, help="default: RXT_DATABASE_URL / the project settings")
    args = parser.parse_args(argv)

    url = args.database_url
    if url is None:

        url = get_settings().resolved_database_url()
    db = database_for(url)
    try:
        db.ensure_ready()
        with db.sessions() as session:
            if args.command == "verify":
                result = verify_chain(session)
                print(f"{result}  [{describe(url)}]")
                reviews = verify_reviews(session)
                print(f"{reviews}  [{describe(url)}]")
                return 0 if result.ok and reviews.ok else 1
            for entry in history(session, limit=args.n):
                print(canonical_json(entry.as_dict()))
            return 0
    except DatabaseUnavailable as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()


if __name__ == "__main__":
    sys.exit(main())
