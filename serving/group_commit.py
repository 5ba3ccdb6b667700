"""Group commit of prescription checks: one writer per process records concurrent checks in one transaction.

Why (issue #16): with one transaction per request, 16 concurrent checks meant 16 threads each taking the review
database's write lock (SQLite ``BEGIN IMMEDIATE``; PostgreSQL the audit chain head's row lock, which serialises
every append).  Only one can hold it; on SQLite the others sleep in SQLite's busy handler (back-off sleeps of up to
100 ms each, so p99 went past a second), on PostgreSQL they queue on the row lock, each paying its own round trips
and commit; and the threads fight over the GIL and churn pooled connections.

How: a check's request puts its job on this process's queue and awaits a future.  One writer task takes every job
waiting (up to ``max_batch``) and records them on the database's threads in *one* transaction
(:func:`serving.review_queue.record_checks`: a constant number of statements per batch, the audit head taken and
moved once), then resolves each future -- so an answer is still sent only after its check is committed.  While a
batch is being written, the next requests gather and form the next batch: the batch size follows the load, and an
idle service writes batches of one (no timer, no added wait).

- ``Idempotency-Key`` jobs ride in the batch too: the stored answer is looked up first (a mismatch fails that job
  alone with 422 and writes nothing for it), its key row is written with the others.  Two jobs with the same key in
  one batch: the later one is recorded after the batch commits (and so gets the first one's answer, replayed).
- When a batch fails for any reason other than an unreachable database (e.g. a key committed at the same moment by
  another process: a unique violation), every job of it is retried on its own
  (:func:`serving.review_queue.record_check_once`), so one bad job never fails the others.
- **Bounded gathering** (``wait_s``, ``RXT_DB_GROUP_COMMIT_WAIT_MS``, default 2 ms): a batch is written at once
  when it already holds as many checks as the largest of the last few batches; otherwise the writer waits at most
  ``wait_s`` for that many to arrive.  Under steady load with c concurrent clients, the answers of one batch bring
  the next c requests a fraction of a millisecond later: without the wait the writer took whatever had arrived
  (with 2 worker processes, 4-5 checks per transaction against 8-9 with one), paying the per-transaction cost
  (session, ~7 statements, commit; on PostgreSQL ~7 round trips) for fewer checks.  An idle service (recent
  batches of one) never waits; when the load drops, one batch waits ``wait_s`` and the expectation falls with it.
- An unreachable or frozen database fails the whole batch with :class:`DatabaseUnavailable` (-> 503, nothing
  reported).  A job that already waited ``socket_timeout_s`` before its batch starts is answered 503 without
  being written, so a frozen database cannot build an unbounded queue of waiting requests; and a batch is given
  only what its oldest job has left of ``socket_timeout_s``, so no check waits longer than that in all (a check
  queued behind a batch stuck on a frozen database would otherwise wait for that batch and then for its own).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from dataclasses import dataclass, field

from serving import review_queue
from serving.db.models import CheckIdempotencyKey, utcnow
from serving.db.session import Database, DatabaseUnavailable, describe, insert_rows
from serving.logs import SERVICE_LOGGER
from serving.review_queue import CheckJob, CheckOutcome, ReviewError

log = logging.getLogger(SERVICE_LOGGER)

__all__ = ["GroupCommitter", "committer_for", "stop_committer", "write_batch"]


@dataclass
class _Item:
    job: CheckJob
    key: str | None
    future: asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)


def _body(job: CheckJob, record) -> dict:
    return {**job.result, "queued": record.queued, "review_id": record.review_id, "audit_id": record.audit_id}


def write_batch(db: Database, jobs: list[tuple[CheckJob, str | None]]) -> list[CheckOutcome | BaseException]:
    """Record ``jobs`` (``(job, idempotency_key)``) in one transaction; one outcome (or per-job error) each.

    Blocking: runs on the database's threads (``Database.run``).  Jobs whose key already appeared earlier in the
    batch are recorded after the commit, each in its own transaction (they replay the first one's answer).
    """
    outcomes: list[CheckOutcome | BaseException | None] = [None] * len(jobs)
    later: list[int] = []
    with db.session() as session:
        seen: set[str] = set()
        fresh: list[int] = []
        hashes: dict[int, str] = {}
        for i, (job, key) in enumerate(jobs):
            if key is None:
                fresh.append(i)
                continue
            if key in seen:
                later.append(i)
                continue
            seen.add(key)
            hashes[i] = review_queue.sha256_json({"prescription": job.prescription, "actor": job.actor})
            try:
                stored = review_queue._stored_answer(  # noqa: SLF001 - the same look-up as record_check_once
                    session, CheckIdempotencyKey, key, hashes[i],
                    lambda _: "a different prescription check; use a new key for a new check")
            except ReviewError as exc:  # 422 for this job alone; nothing was written for it
                outcomes[i] = exc
                continue
            if stored is not None:
                outcomes[i] = CheckOutcome(stored.response, replayed=True)
            else:
                fresh.append(i)
        records = review_queue.record_checks(session, [jobs[i][0] for i in fresh])
        keyed = []
        for i, record in zip(fresh, records):
            job, key = jobs[i]
            body = _body(job, record)
            outcomes[i] = CheckOutcome(body)
            if key is not None:
                keyed.append({"key": key, "request_hash": hashes[i], "actor": job.actor,
                              "audit_id": record.audit_id, "response": body, "created_at": utcnow()})
        insert_rows(session, CheckIdempotencyKey.__table__, keyed)
    for i in later:
        outcomes[i] = _one(db, *jobs[i])
    return outcomes  # type: ignore[return-value]


def _one(db: Database, job: CheckJob, key: str | None) -> CheckOutcome | BaseException:
    try:
        return review_queue.record_check_once(db, prescription=job.prescription, result=job.result,
                                              actor=job.actor, queue_min_severity=job.queue_min_severity,
                                              idempotency_key=key)
    except Exception as exc:  # noqa: BLE001 - handed to that job's request (503 / 422 / logged 500)
        return exc


def _write_or_split(db: Database, jobs: list[tuple[CheckJob, str | None]]) -> list[CheckOutcome | BaseException]:
    try:
        return write_batch(db, jobs)
    except DatabaseUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad job must not fail the others: each on its own
        if len(jobs) > 1:
            log.warning("group commit of %d checks failed (%s); recording each on its own", len(jobs),
                        exc.__class__.__name__)
        return [_one(db, job, key) for job, key in jobs]


class GroupCommitter:
    """One per :class:`Database` and event loop (see the module docstring)."""

    RECENT = 4  # batches whose largest size is the next one's expectation

    def __init__(self, db: Database, max_batch: int = 64, observe=None, wait_s: float = 0.0) -> None:
        self.db = db
        self.max_batch = max(1, max_batch)
        self.observe = observe  # called with each committed batch's size (the rxt_check_commit_batch_size metric)
        self.wait_s = max(0.0, wait_s)
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recent: deque[int] = deque(maxlen=self.RECENT)
        self._want = 0  # queue length the writer is waiting for (0: not waiting)
        self._enough: asyncio.Event | None = None
        self.batches = 0
        self.jobs = 0
        self.waits = 0  # batches that waited (informative; tests)

    def _ensure_writer(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            if self._loop is not loop or self._queue is None:
                self._queue = asyncio.Queue()
            self._loop = loop
            self._task = loop.create_task(self._writer(self._queue), name="rxt-group-commit")
        return self._queue

    async def submit(self, job: CheckJob, idempotency_key: str | None = None) -> CheckOutcome:
        """Record ``job``; return its outcome once its batch is committed (raises the job's error)."""
        queue = self._ensure_writer()
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Item(job, idempotency_key, future))
        if self._want and queue.qsize() >= self._want:
            self._want = 0
            self._enough.set()
        return await future

    async def _gather(self, queue: asyncio.Queue, have: int) -> None:
        """Wait at most ``wait_s`` until ``have`` + the queue reach the recent batches' size (see the module
        docstring); return at once when they already do, or when recent batches were of one."""
        expected = min(self.max_batch, max(self._recent, default=1))
        missing = expected - have
        if missing <= 0 or queue.qsize() >= missing:
            return
        if self._enough is None:
            self._enough = asyncio.Event()
        self._enough.clear()
        self._want = missing
        self.waits += 1
        try:
            await asyncio.wait_for(self._enough.wait(), self.wait_s)
        except TimeoutError:
            pass
        finally:
            self._want = 0

    async def _writer(self, queue: asyncio.Queue) -> None:
        limit = self.db.timeouts.socket_timeout_s
        while True:
            items = [await queue.get()]
            if self.wait_s > 0:
                try:
                    await self._gather(queue, len(items))
                except asyncio.CancelledError:  # stopping: the taken job is answered, not left waiting
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(DatabaseUnavailable("the service is shutting down"))
                    raise
            while len(items) < self.max_batch and not queue.empty():
                items.append(queue.get_nowait())
            now = time.monotonic()
            live = []
            for item in items:
                if item.future.done():  # its request is gone (client disconnected, cancelled)
                    continue
                if now - item.queued_at > limit:
                    item.future.set_exception(DatabaseUnavailable(
                        f"review database {describe(self.db.url)} is busy: the check waited more than {limit:g} s "
                        "to be recorded"))
                    continue
                live.append(item)
            if not live:
                continue
            # no check waits longer than the socket timeout in all: the batch gets what its oldest job has left
            # (a check queued behind a batch stuck on a frozen database would otherwise wait twice)
            left = limit - (time.monotonic() - min(i.queued_at for i in live))
            try:
                outcomes = await self.db.run(_write_or_split, self.db, [(i.job, i.key) for i in live],
                                             timeout=max(left, 0.05))
            except asyncio.CancelledError:
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(DatabaseUnavailable("the service is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - DatabaseUnavailable (or worse): every job of the batch
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            self.jobs += len(live)
            self._recent.append(len(items))
            if self.observe is not None:
                self.observe(len(live))
            for item, outcome in zip(live, outcomes):
                if item.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    async def stop(self) -> None:
        if self.batches:
            log.info("group commit: %d checks recorded in %d transactions (%.1f per transaction)", self.jobs,
                     self.batches, self.jobs / self.batches)
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        queue = self._queue
        while queue is not None and not queue.empty():
            item = queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(DatabaseUnavailable("the service is shutting down"))


_committers: "weakref.WeakKeyDictionary[Database, GroupCommitter]" = weakref.WeakKeyDictionary()


def committer_for(db: Database, max_batch: int = 64, metrics=None, wait_s: float = 0.0) -> GroupCommitter:
    """This process's writer for ``db`` (created on first use); ``metrics`` (:class:`serving.metrics.Metrics`)
    gets each batch's size; ``wait_s``: see :class:`GroupCommitter` (bounded gathering)."""
    committer = _committers.get(db)
    if committer is None:
        committer = _committers[db] = GroupCommitter(db, max_batch, wait_s=wait_s)
    if metrics is not None and committer.observe is None:
        committer.observe = metrics.commit_batch_size.observe
    return committer


async def stop_committer(db: Database) -> None:
    committer = _committers.pop(db, None)
    if committer is not None:
        await committer.stop()
