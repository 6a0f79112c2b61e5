"""The database threads' queue (chat.streaming.db.ThreadPool): what stands between a new message and its
reply's upstream request (`start_db`) goes before everything else waiting for a request thread; results,
errors and cancellation reach the caller as with `run_in_executor`; threads start as needed, up to the
bound, and are kept. Causality only: gates and events decide the order, never a timer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from chat.models import Message
from chat.streaming import METRICS_REGISTRY, db
from chat.streaming.db import ThreadPool, request_db
from tests.support.asgi_client import AsgiClient, stream_path
from tests.support.fake_anthropic import End, FakeAnthropic, Text
from tests.support.streams import eventually, follow


def _blocker(started: threading.Event, gate: threading.Event) -> Callable[[], None]:
    def block() -> None:
        started.set()
        gate.wait(timeout=30)

    return block


class Occupied:
    """Every thread of a pool busy, each until its own gate is set."""

    def __init__(self, gates: list[threading.Event], futures: list[asyncio.Future[None]]) -> None:
        self.gates = gates
        self.futures = futures

    async def release(self) -> None:
        for gate in self.gates:
            gate.set()
        await asyncio.gather(*self.futures)


async def _occupy(pool: ThreadPool) -> Occupied:
    gates, futures = [], []
    for _ in range(pool.workers):
        started, gate = threading.Event(), threading.Event()
        futures.append(pool.submit(_blocker(started, gate)))
        gates.append(gate)
        await asyncio.to_thread(started.wait, 30)
    return Occupied(gates, futures)


async def test_calls_submitted_first_run_before_the_rest_each_kind_in_order() -> None:
    pool = ThreadPool(workers=1, name="test-order")
    occupied = await _occupy(pool)
    ran: list[str] = []
    futures = [
        pool.submit(lambda: ran.append("rest 1")),
        pool.submit(lambda: ran.append("first 1"), first=True),
        pool.submit(lambda: ran.append("rest 2")),
        pool.submit(lambda: ran.append("first 2"), first=True),
    ]
    assert pool.waiting() == 4 and ran == []
    await occupied.release()
    await asyncio.gather(*futures)
    assert ran == ["first 1", "first 2", "rest 1", "rest 2"]
    assert pool.waiting() == 0


async def test_results_and_errors_reach_the_caller() -> None:
    pool = ThreadPool(workers=2, name="test-results")
    assert await pool.submit(lambda: threading.current_thread().name) in ("test-results_0", "test-results_1")
    with pytest.raises(ZeroDivisionError):
        await pool.submit(lambda: 1 // 0)
    assert await pool.submit(lambda: "still works", first=True) == "still works"


async def test_a_cancelled_call_that_has_not_started_never_runs() -> None:
    pool = ThreadPool(workers=1, name="test-cancel")
    occupied = await _occupy(pool)
    ran: list[str] = []
    skipped = pool.submit(lambda: ran.append("skipped"))
    kept = pool.submit(lambda: ran.append("kept"))
    skipped.cancel()
    await occupied.release()
    await kept
    assert ran == ["kept"]


async def test_threads_start_as_needed_up_to_the_bound_and_are_kept() -> None:
    pool = ThreadPool(workers=2, name="test-bound")

    def names() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("test-bound_")}

    assert names() == set()
    await pool.submit(lambda: None)
    assert names() == {"test-bound_0"}
    # A burst while the first thread is busy starts the second, never a third.
    occupied = await _occupy(pool)
    assert names() == {"test-bound_0", "test-bound_1"}
    extra = [pool.submit(lambda: None) for _ in range(5)]
    assert pool.waiting() == 5
    await occupied.release()
    await asyncio.gather(*extra)
    assert names() == {"test-bound_0", "test-bound_1"}


async def test_a_pool_counts_its_calls_waits_running_time_and_cpu() -> None:
    """What `/metrics` reports per pool: a call that waited behind another has waited; a call that sat
    blocked ran longer than its CPU time; one that computed used CPU; each call counted once, errors too."""
    pool = ThreadPool(workers=1, name="test-stats")
    assert pool.stats() == db.PoolStats()
    occupied = await _occupy(pool)  # a call blocked on its gate (CPU: next to none)
    queued = pool.submit(lambda: sum(range(200_000)))  # waits for the thread, then computes
    await eventually(lambda: pool.waiting() == 1)
    await occupied.release()
    await queued
    with pytest.raises(ZeroDivisionError):
        await pool.submit(lambda: 1 // 0)
    await eventually(lambda: pool.stats().calls == 3)
    stats = pool.stats()
    assert stats.wait_seconds > 0 and stats.cpu_seconds > 0
    assert stats.run_seconds > stats.cpu_seconds  # the blocked call's wall time, not CPU


@pytest.mark.django_db(transaction=True)
async def test_a_new_messages_commit_goes_ahead_of_request_work_queued_before_it(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    """Every request thread busy; a read (as a stream's open or a page's render would be) waits for one;
    then a new message arrives. When one thread frees up, it commits the new message first: the read,
    queued earlier, already finds the reply's row."""
    upstream.enqueue(Text("Served first."), End())
    pool = db.pool("request")
    occupied = await _occupy(pool)

    def reply_exists() -> bool:
        return Message.objects.filter(role=Message.Role.ASSISTANT).exists()

    read = asyncio.ensure_future(request_db(reply_exists)())
    await eventually(lambda: pool.waiting() == 1)
    post = asyncio.ensure_future(alice_client.request("POST", "/c/start/", data={"text": "Hello"}))
    await eventually(lambda: pool.waiting() == 2)  # the read, then the start's commit
    assert METRICS_REGISTRY.get_sample_value("chat_db_calls_waiting", {"pool": "request"}) == 2
    occupied.gates[0].set()  # one thread frees up: it takes the commit, then the read
    assert await read is True
    await occupied.release()
    response = await post
    assert response.status == 200, response.text
    _, events = await follow(alice_client, stream_path(response.text))
    assert events[-1].event == "done"
    assert METRICS_REGISTRY.get_sample_value("chat_db_calls_waiting", {"pool": "request"}) == 0
    request_pool = {"pool": "request"}
    await eventually(
        lambda: METRICS_REGISTRY.get_sample_value("chat_db_calls_total", request_pool) == pool.stats().calls
    )
    assert pool.stats().calls >= 3  # the blockers, the read, the commit, the render...
    for family in ("wait_seconds", "seconds", "cpu_seconds"):
        value = METRICS_REGISTRY.get_sample_value(f"chat_db_call_{family}_total", request_pool)
        assert value is not None and value > 0, family
