"""The asyncio micro-batcher, alone and behind the real triage endpoint."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from serving.batching import BatcherClosedError, MicroBatcher, QueueFullError
from serving.metrics import Metrics
from tests.serving.triage_support import CHAT, served_settings  # noqa: F401 - fixture


class Recorder:
    """A real batch function: doubles numbers, remembers each call's size and thread."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None, gate: threading.Event | None = None):
        self.calls: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay, self.fail_on, self.gate = delay, fail_on, gate

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot process {self.fail_on}")
        return [2 * i for i in items]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_submissions_share_one_call():
    async def main():
        rec = Recorder()
        b = MicroBatcher(rec, max_size=16, max_wait_ms=50)
        await b.start()
        try:
            results = await asyncio.gather(*(b.submit(i) for i in range(10)))
        finally:
            await b.stop()
        return rec, results

    rec, results = run(main())
    assert results == [2 * i for i in range(10)]
    assert rec.calls == [list(range(10))]  # one call, in submission order
    assert all(name.startswith("triage-batch") for name in rec.threads)  # off the event loop


def test_max_size_is_respected_and_later_items_form_the_next_batch():
    async def main():
        rec = Recorder(delay=0.02)
        b = MicroBatcher(rec, max_size=4, max_wait_ms=20)
        await b.start()
        try:
            results = await asyncio.gather(*(b.submit(i) for i in range(10)))
        finally:
            await b.stop()
        return rec, results

    rec, results = run(main())
    assert results == [2 * i for i in range(10)]
    assert [len(c) for c in rec.calls] == [4, 4, 2]
    assert [i for c in rec.calls for i in c] == list(range(10))


def test_wait_is_bounded():
    async def main():
        rec = Recorder()
        b = MicroBatcher(rec, max_size=64, max_wait_ms=30)
        await b.start()
        try:
            t0 = time.perf_counter()
            assert await b.submit(21) == 42
            return time.perf_counter() - t0
        finally:
            await b.stop()

    elapsed = run(main())
    # A lone request waits about max_wait for company, then runs alone: it is not stuck.
    assert 0.025 <= elapsed < 2.0


def test_no_wait_under_light_load():
    async def main():
        rec = Recorder()
        b = MicroBatcher(rec, max_size=64, max_wait_ms=400)
        await b.start()
        try:
            assert await b.submit(1) == 2  # first request: waits (no history)
            t0 = time.perf_counter()
            for i in range(3):  # one at a time: the previous batch was a lone item
                assert await b.submit(i) == 2 * i
            return time.perf_counter() - t0
        finally:
            await b.stop()

    assert run(main()) < 0.4  # three waits would be >= 1.2 s


def test_batch_size_one_means_one_item_per_call():
    async def main():
        rec = Recorder()
        b = MicroBatcher(rec, max_size=1, max_wait_ms=10)
        await b.start()
        try:
            await asyncio.gather(*(b.submit(i) for i in range(5)))
        finally:
            await b.stop()
        return rec

    assert [len(c) for c in run(main()).calls] == [1] * 5


def test_a_full_queue_refuses_at_once_and_counts_it():
    async def main():
        gate = threading.Event()
        rec = Recorder(gate=gate)
        metrics = Metrics()
        b = MicroBatcher(rec, max_size=2, max_wait_ms=0, max_queue=4, metrics=metrics)
        await b.start()
        try:
            first = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
            while not rec.calls:  # the worker holds the first batch (blocked on the gate)
                await asyncio.sleep(0.005)
            queued = [asyncio.ensure_future(b.submit(i)) for i in range(2, 6)]
            await asyncio.sleep(0.01)
            with pytest.raises(QueueFullError, match="queue is full"):
                await b.submit(99)
            with pytest.raises(QueueFullError):
                await b.submit_many([7, 8])
            gate.set()
            done = await asyncio.gather(*first, *queued)
        finally:
            gate.set()
            await b.stop()
        return done, metrics

    done, metrics = run(main())
    assert done == [0, 2, 4, 6, 8, 10]
    assert metrics.registry.get_sample_value("rxt_triage_rejected_total", {"reason": "queue_full"}) == 3


def test_an_error_reaches_every_request_of_its_batch_only():
    async def main():
        rec = Recorder(fail_on=2)
        b = MicroBatcher(rec, max_size=8, max_wait_ms=30)
        await b.start()
        try:
            bad = await asyncio.gather(*(b.submit(i) for i in (1, 2, 3)), return_exceptions=True)
            good = await b.submit(5)  # the worker survived the failing batch
        finally:
            await b.stop()
        return bad, good

    bad, good = run(main())
    assert all(isinstance(e, ValueError) and "cannot process 2" in str(e) for e in bad)
    assert good == 10


def test_an_item_answered_with_an_exception_fails_alone():
    def process(items):
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    async def main():
        b = MicroBatcher(process, max_size=8, max_wait_ms=30)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(i) for i in (1, -2, 3)), return_exceptions=True)
        finally:
            await b.stop()

    first, bad, third = run(main())
    assert (first, third) == (1, 3) and isinstance(bad, ValueError) and str(bad) == "bad -2"


def test_cancelled_requests_are_skipped():
    async def main():
        gate = threading.Event()
        rec = Recorder(gate=gate)
        b = MicroBatcher(rec, max_size=1, max_wait_ms=0)
        await b.start()
        try:
            first = asyncio.ensure_future(b.submit(1))
            while not rec.calls:
                await asyncio.sleep(0.005)
            gone = asyncio.ensure_future(b.submit(2))  # its client goes away while queued
            await asyncio.sleep(0.01)
            gone.cancel()
            kept = asyncio.ensure_future(b.submit(3))
            gate.set()
            return rec, await first, await kept
        finally:
            gate.set()
            await b.stop()

    rec, first, kept = run(main())
    assert (first, kept) == (2, 6)
    assert [2] not in rec.calls


def test_stopped_batcher_refuses_and_fails_pending():
    async def main():
        gate = threading.Event()
        b = MicroBatcher(Recorder(gate=gate), max_size=1, max_wait_ms=0)
        with pytest.raises(BatcherClosedError):
            await b.submit(1)
        await b.start()
        running = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.02)
        waiting = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0.01)
        stopper = asyncio.ensure_future(b.stop())
        await asyncio.sleep(0.01)
        gate.set()
        await stopper
        return await asyncio.gather(running, waiting, return_exceptions=True)

    results = run(main())
    assert all(isinstance(r, BatcherClosedError) for r in results)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_size=0)
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_size=8, max_queue=4)


def test_concurrent_http_requests_are_batched(served_settings):
    """64 concurrent requests to the real app: fewer classifier calls than requests."""
    from serving.app import create_app

    settings = served_settings.model_copy(update={"batch_max_size": 32, "batch_max_wait_ms": 20.0})
    app = create_app(settings)

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=CHAT) as c:
                texts = [f"I have had a cough for {i} days and a sore throat" for i in range(64)]
                responses = await asyncio.gather(*(c.post("/v1/triage", json={"text": t}) for t in texts))
                metrics = (await c.get("/metrics")).text
        return responses, metrics

    responses, _ = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:2]
    reg = app.state.rxt.metrics.registry
    batches = reg.get_sample_value("rxt_triage_batch_size_count")
    texts = reg.get_sample_value("rxt_triage_batch_size_sum")
    assert texts == 64
    assert batches < 64 and texts / batches > 1, (batches, texts)
    # and no batch exceeded the configured size
    assert reg.get_sample_value("rxt_triage_batch_size_bucket", {"le": "32.0"}) == batches
