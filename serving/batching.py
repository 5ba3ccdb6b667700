"""An asyncio micro-batcher: many concurrent requests, one model call.

Requests put their item on a bounded queue and await a future.  One worker task takes the first
waiting item, then collects more until it has ``max_size`` items or ``max_wait_ms`` has passed
since that first item (no wait at all when the previous batch was a lone item and nothing
is queued: light load), and runs ``process(items)`` ONCE in a dedicated worker thread (so the
event loop keeps accepting requests while onnxruntime computes).  While a batch computes, new
requests queue up and form the next batch, so under load batches fill without waiting.

``process`` may return an exception instance for an item: only that item's request fails.
``max_size=1`` turns batching off (one item per call, still serialised through one thread),
which is what the load benchmark compares against.  A full queue refuses new work at once
(``QueueFullError`` -> HTTP 503 with Retry-After) instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Generic, Sequence, TypeVar

from serving.logs import SERVICE_LOGGER

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(SERVICE_LOGGER)


class QueueFullError(RuntimeError):
    """The batcher's queue is full; the caller should retry later."""


class BatcherClosedError(RuntimeError):
    """The batcher is not running (service starting up or shutting down)."""


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        max_size: int = 32,
        max_wait_ms: float = 3.0,
        max_queue: int = 2048,
        metrics: Any | None = None,
        name: str = "triage",
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        if max_queue < max_size:
            raise ValueError("max_queue must be >= max_size")
        self._process = process
        self.max_size = max_size
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self._metrics = metrics
        self.name = name
        self._queue: asyncio.Queue[tuple[T, asyncio.Future]] | None = None
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._last_size: int | None = None

    # -- life cycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-batch")
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-batcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(BatcherClosedError("the service is shutting down"))
        if self._executor is not None:
            executor, self._executor = self._executor, None
            # Wait for a batch still computing without blocking the event loop.
            await asyncio.to_thread(executor.shutdown, wait=True)

    def waiting(self) -> int:
        """Items queued and not yet taken into a batch (the backlog of the answering path)."""
        queue = self._queue
        return 0 if queue is None else queue.qsize()

    # -- submitting --------------------------------------------------------------------------
    def _enqueue(self, items: Sequence[T]) -> list[asyncio.Future]:
        if not self.running or self._queue is None:
            raise BatcherClosedError("the triage batcher is not running")
        if self._queue.qsize() + len(items) > self.max_queue:
            if self._metrics is not None:
                self._metrics.rejected.labels(reason="queue_full").inc(len(items))
            raise QueueFullError(
                f"triage queue is full ({self._queue.qsize()} waiting, limit {self.max_queue}); retry shortly"
            )
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            fut = loop.create_future()
            self._queue.put_nowait((item, fut))
            futures.append(fut)
        self._arrived.set()
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._queue.qsize())
        return futures

    async def submit(self, item: T) -> R:
        (fut,) = self._enqueue([item])
        return await fut

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """All or nothing: refused at once if the queue has no room for every item."""
        if not items:
            return []
        futures = self._enqueue(items)
        return list(await asyncio.gather(*futures))

    # -- the worker --------------------------------------------------------------------------
    async def _collect(self) -> list[tuple[T, asyncio.Future]]:
        queue = self._queue
        assert queue is not None and self._arrived is not None
        batch = [await queue.get()]
        # Adaptive wait: when the previous batch held a single item (light load) and nothing else
        # is waiting, run at once instead of paying max_wait for company that is not coming.
        # Under load batches hold several items and the bounded wait applies again.
        wait = 0.0 if (self._last_size == 1 and queue.empty()) else self.max_wait
        deadline = time.monotonic() + wait
        while len(batch) < self.max_size:
            while len(batch) < self.max_size and not queue.empty():
                batch.append(queue.get_nowait())
            if len(batch) >= self.max_size:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                while len(batch) < self.max_size and not queue.empty():
                    batch.append(queue.get_nowait())
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            # A request whose client went away has a cancelled future: skip its work.
            live = [(item, fut) for item, fut in batch if not fut.done()]
            if self._metrics is not None:
                self._metrics.queue_depth.set(self._queue.qsize())
            if not live:
                continue
            items = [item for item, _ in live]
            self._last_size = len(items)
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._process, items)
                if len(results) != len(items):
                    raise RuntimeError(f"batch returned {len(results)} results for {len(items)} items")
            except asyncio.CancelledError:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(BatcherClosedError("the service is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                log.exception("triage batch of %d failed", len(items))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if self._metrics is not None:
                self._metrics.batch_size.observe(len(items))
                self._metrics.batch_seconds.observe(time.perf_counter() - started)
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    # ``process`` may answer an item with an exception: it goes to that request only.
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
