"""Two daphne processes on the real PostgreSQL and a private Redis: the control path between them survives
a quiet spell longer than Redis's blocking pop, and a Redis restart in the middle of a reply; a reply read
only beside its producer sends nothing through Redis per delta, until a tab elsewhere opens.

The processes save on a 10-minute throttle (CHAT_SAVE_INTERVAL, with a lease to match), so the channel layer
is the only fast path between them: the database fallbacks (the stop flag, saved partial text) cannot hide
a broken control path. Every step is gated by the fake upstream: a subscriber must receive chunk k while
chunk k+1 is still held upstream, so what arrives can only have arrived live."""

from __future__ import annotations

import asyncio
import html
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import RedisMonitor, RedisServer, db_row, fresh_database, services_or_skip
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.live_client import LiveClient, ids, sse_path
from tests.support.live_server import DaphneProcess, manage
from tests.support.waiting import BOUND, until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PG_URL = os.environ.get("DATABASE_URL_TEST", "postgres://postgres@127.0.0.1:5432/test")
# Longer than both redis-py 8's default socket read timeout (5 s) and channels_redis's blocking pop (5 s).
QUIET = 7.0
SAVE_INTERVAL = 600.0  # no flusher round (text save, stop flag) happens within this module's run


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    services_or_skip(PG_URL)
    with fresh_database(PG_URL) as url:
        yield url


@pytest.fixture(scope="module")
def servers(
    database: str,
    private_redis: RedisServer,
    upstream: FakeAnthropic,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[DaphneProcess]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHAT_", "ANTHROPIC_"))},
        "DATABASE_URL": database,
        "REDIS_URL": private_redis.url,
        "DEBUG": "True",
        "DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "CHAT_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": upstream.url,
        "CHAT_UPSTREAM_MAX_RETRIES": "0",
        "CHAT_SAVE_INTERVAL": str(SAVE_INTERVAL),
        "CHAT_LEASE_SECONDS": str(SAVE_INTERVAL * 2),
        "CHAT_KEEPALIVE_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    manage(env, "migrate", "--noinput")
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('quiet', password='quiet-pass-1')",
    )
    log_dir = Path(tmp_path_factory.mktemp("logs"))
    procs = [DaphneProcess(env, log_dir, name).start() for name in ("a", "b")]
    yield procs
    for proc in procs:
        proc.stop()


@pytest.fixture
async def user() -> AsyncIterator[LiveClient]:
    client = LiveClient()
    yield client
    await client.close()


def sent(upstream: FakeAnthropic) -> str:
    return "".join(text for text, _ in upstream.sent)


def enqueue_gated(upstream: FakeAnthropic, chunks: list[str], *tail: Any) -> list[threading.Event]:
    """A reply that sends each chunk, then waits for its gate (set by the test), then `tail` (End())."""
    gates = [threading.Event() for _ in chunks]
    steps: list[Any] = []
    for chunk, gate in zip(chunks, gates, strict=True):
        steps += [Text(chunk), Wait(gate, timeout=120)]
    upstream.enqueue(*steps, *tail)
    return gates


async def posted_on_one_read_live_on_other(
    user: LiveClient, upstream: FakeAnthropic, database: str, post_on: str, read_on: str, conversation_id: int
) -> None:
    """A message posted through `post_on` streams live from `read_on` (its second chunk is held upstream
    until the first has arrived) and is saved exactly."""
    gate = threading.Event()
    upstream.enqueue(Text("Fresh "), Wait(gate, timeout=60), Text("stream."), End())
    status, fragment = await user.post(f"{post_on}/c/{conversation_id}/send/", {"text": "Still there?"})
    assert status == 200, fragment
    new_path = sse_path(fragment)
    fresh = ""
    async with asyncio.timeout(2 * BOUND):
        async for event in user.events(read_on + new_path):
            if event.event == "delta":
                fresh += html.unescape(event.data)
                if fresh == "Fresh ":
                    gate.set()
            elif event.event == "done":
                break
    new_row = db_row(database, ids(new_path)[1])
    assert new_row["status"] == "complete" and fresh == new_row["content"] == "Fresh stream."


async def test_after_a_quiet_spell_a_subscriber_on_the_other_process_gets_the_rest_live(
    servers: list[DaphneProcess], upstream: FakeAnthropic, database: str, user: LiveClient
) -> None:
    a, b = servers
    upstream.reset()
    chunks = ["Before the quiet spell. ", "One, ", "two, ", "three."]
    gates = [threading.Event() for _ in chunks[1:]]
    upstream.enqueue(
        Text(chunks[0]),
        Wait(gates[0], timeout=60),
        Text(chunks[1]),
        Wait(gates[1], timeout=60),
        Text(chunks[2]),
        Wait(gates[2], timeout=60),
        Text(chunks[3]),
        End(),
    )
    await user.login(a.url, "quiet", "quiet-pass-1")
    status, fragment = await user.post(a.url + "/c/start/", {"text": "Think before you answer"})
    assert status == 200, fragment
    path = sse_path(fragment)
    await until(lambda: sent(upstream) == chunks[0], "the first chunk leaves the upstream")
    # The reply is quiet now: its producer on A waits on the channel layer with nothing to receive.
    await asyncio.sleep(QUIET)

    received = ""
    arrivals: list[float] = []
    subscribed_at = time.monotonic()
    async with asyncio.timeout(BOUND):
        async for event in user.events(b.url + path):
            if event.event == "delta":
                received += html.unescape(event.data)
                arrivals.append(time.monotonic() - subscribed_at)
                k = next((i for i in range(len(chunks)) if received == "".join(chunks[: i + 1])), None)
                assert k is not None, f"received {received!r}: not a prefix made of whole chunks"
                # Causality: chunk k is here while chunk k+1 is still held upstream.
                assert sent(upstream) == "".join(chunks[: k + 1])
                if k < len(gates):
                    gates[k].set()
            elif event.event == "done":
                break
    row = db_row(database, ids(path)[1])
    assert row["status"] == "complete"
    assert received == row["content"] == "".join(chunks)
    assert len(arrivals) == len(chunks)  # one event per chunk: live, not one burst at the end
    print(f"quiet {QUIET:.0f}s; deltas on B at {', '.join(f'{t:.2f}s' for t in arrivals)} after subscribing")


async def test_stop_through_the_other_process_after_a_quiet_spell_closes_the_upstream(
    servers: list[DaphneProcess], upstream: FakeAnthropic, database: str, user: LiveClient
) -> None:
    a, b = servers
    upstream.reset()
    gate = threading.Event()
    upstream.enqueue(Text("Quiet, then stopped."), Wait(gate, timeout=120), Text(" Never sent."), End())
    try:
        await user.login(b.url, "quiet", "quiet-pass-1")
        status, fragment = await user.post(b.url + "/c/start/", {"text": "Take your time"})
        assert status == 200, fragment
        conversation_id, reply_id = ids(sse_path(fragment))
        await until(lambda: sent(upstream) == "Quiet, then stopped.", "the first chunk leaves the upstream")
        await asyncio.sleep(QUIET)
        assert upstream.client_disconnects == 0

        stop_at = time.monotonic()
        status, _ = await user.post(f"{a.url}/c/{conversation_id}/m/{reply_id}/stop/")
        assert status == 204
        # Only the channel layer can carry this Stop in time: the database flag is read every 10 minutes.
        await until(lambda: upstream.client_disconnects >= 1, "the upstream request is closed")
        elapsed = time.monotonic() - stop_at
        await until(lambda: db_row(database, reply_id)["status"] != "streaming", "the reply is saved")
        row = db_row(database, reply_id)
        assert row["status"] == "stopped" and row["content"] == "Quiet, then stopped."
        print(f"quiet {QUIET:.0f}s; Stop POSTed to A → upstream closed by B {elapsed * 1000:.0f} ms later")
    finally:
        gate.set()


async def test_redis_restart_mid_reply_the_reply_completes_and_new_streams_work(
    servers: list[DaphneProcess],
    upstream: FakeAnthropic,
    database: str,
    private_redis: RedisServer,
    user: LiveClient,
) -> None:
    a, b = servers
    upstream.reset()
    chunks = ["Before the restart. ", "During the outage. ", "After the restart."]
    gates = [threading.Event() for _ in range(3)]
    upstream.enqueue(
        Text(chunks[0]),
        Wait(gates[0], timeout=60),
        Text(chunks[1]),
        Wait(gates[1], timeout=60),
        Text(chunks[2]),
        Wait(gates[2], timeout=60),
        End(),
    )
    await user.login(a.url, "quiet", "quiet-pass-1")
    status, fragment = await user.post(a.url + "/c/start/", {"text": "Survive a restart"})
    assert status == 200, fragment
    path = sse_path(fragment)
    conversation_id, reply_id = ids(path)

    received = ""
    figures: dict[str, float] = {}
    async with asyncio.timeout(2 * BOUND):
        async for event in user.events(b.url + path):
            if event.event == "delta":
                received += html.unescape(event.data)
                if received == chunks[0]:
                    lost_before = b.log_text().count("Redis pub/sub connection was lost")
                    outages_before = a.log_text().count("; dropping sends")
                    private_redis.kill()
                    killed_at = time.monotonic()
                    gates[0].set()

                    # Redis stays down until A's producer has the next chunk and has met the dead Redis
                    # (its first failed send is logged, "dropping sends", and from then on it drops every
                    # send, that chunk's included, until a retry works: usually the chunk's own group_send,
                    # but a sync answer to a stream left by an earlier test may fail first) and B's reader
                    # has lost it too, or until the reply died of it.
                    def outage_felt(before: int = lost_before, outages: int = outages_before) -> bool:
                        if db_row(database, reply_id)["status"] != "streaming":
                            return True
                        reader_lost = b.log_text().count("Redis pub/sub connection was lost") > before
                        publish_failed = a.log_text().count("; dropping sends") > outages
                        chunk_out = sent(upstream) == "".join(chunks[:2])
                        return publish_failed and reader_lost and chunk_out

                    await until(outage_felt, "A's publish and B's reader both meet the dead Redis")
                    private_redis.start()
                    restarted_at = time.monotonic()
                    figures["down"] = restarted_at - killed_at
                elif received == "".join(chunks[:2]):
                    # Missed while Redis was down; B's layer subscribed its groups again, and B synced it
                    # from A's memory.
                    figures["caught up"] = time.monotonic() - restarted_at
                    assert sent(upstream) == "".join(chunks[:2])
                    gates[1].set()
                elif received == "".join(chunks):
                    assert sent(upstream) == "".join(chunks)  # live: the end is still held upstream
                    gates[2].set()
                else:
                    raise AssertionError(f"unexpected text so far: {received!r}")
            elif event.event == "done":
                break
    row = db_row(database, reply_id)
    assert row["status"] == "complete", row
    assert received == row["content"] == "".join(chunks)

    # A new stream after the restart: posted through B, followed live on A.
    await posted_on_one_read_live_on_other(user, upstream, database, b.url, a.url, conversation_id)
    print(
        f"Redis down {figures['down']:.2f}s (kill → answering again); "
        f"B caught up {figures['caught up']:.2f}s after Redis came back; "
        "the reply completed exactly and a new stream ran live"
    )


async def test_two_tabs_one_beside_the_producer_both_live_then_stop_after_a_quiet_spell(
    servers: list[DaphneProcess], upstream: FakeAnthropic, database: str, user: LiveClient
) -> None:
    """A process that generates a reply and also streams it to a tab receives on two channels at once. Both
    must stay live: chunk k reaches both tabs while chunk k+1 is held upstream, and after a quiet spell a
    Stop through the other process still reaches the producer."""
    a, b = servers
    upstream.reset()
    chunks = ["Both tabs ", "see this ", "live."]
    gates = enqueue_gated(upstream, chunks, Text(" Never sent."), End())
    try:
        await user.login(a.url, "quiet", "quiet-pass-1")
        status, fragment = await user.post(a.url + "/c/start/", {"text": "Two tabs"})
        assert status == 200, fragment
        path = sse_path(fragment)
        conversation_id, reply_id = ids(path)
        tabs = {"beside the producer": a.url, "on the other process": b.url}
        received = dict.fromkeys(tabs, "")
        have: dict[str, list[asyncio.Event]] = {tab: [asyncio.Event() for _ in chunks] for tab in tabs}

        async def follow(tab: str) -> str:
            async for event in user.events(tabs[tab] + path):
                if event.event == "delta":
                    received[tab] += html.unescape(event.data)
                    for k in range(len(chunks)):
                        if received[tab] == "".join(chunks[: k + 1]):
                            assert sent(upstream) == received[tab]  # chunk k+1 is still held upstream
                            have[tab][k].set()
                elif event.event == "done":
                    return event.data
            raise AssertionError("stream ended without done")

        followers = [asyncio.create_task(follow(tab)) for tab in tabs]
        for k in range(len(chunks)):
            for tab in tabs:
                try:
                    await asyncio.wait_for(have[tab][k].wait(), BOUND)
                except TimeoutError:
                    raise AssertionError(f"the tab {tab} never got chunk {k} live: {received}") from None
            if k < len(chunks) - 1:
                gates[k].set()

        # Quiet now, with both tabs open; then Stop through B. Only the channel layer carries it in time.
        await asyncio.sleep(QUIET)
        stop_at = time.monotonic()
        status, _ = await user.post(f"{b.url}/c/{conversation_id}/m/{reply_id}/stop/")
        assert status == 204
        await until(lambda: upstream.client_disconnects >= 1, "the upstream request is closed")
        elapsed = time.monotonic() - stop_at
        finals = await asyncio.wait_for(asyncio.gather(*followers), BOUND)
        assert all("You stopped this response." in final for final in finals)
        row = db_row(database, reply_id)
        assert row["status"] == "stopped"
        assert list(received.values()) == [row["content"]] * 2 and row["content"] == "".join(chunks)
        print(f"both tabs live; {QUIET:.0f}s quiet; Stop via B → upstream closed in {elapsed * 1000:.0f} ms")
    finally:
        for gate in gates:
            gate.set()


async def test_a_reply_read_beside_its_producer_goes_through_redis_only_once_a_tab_elsewhere_opens(
    servers: list[DaphneProcess],
    upstream: FakeAnthropic,
    database: str,
    private_redis: RedisServer,
    user: LiveClient,
) -> None:
    """While its only tab reads in the producer's process, a reply's deltas reach it there: Redis runs no
    PUBLISH to the reply's audience. A tab on the other process opens mid-reply: it gets the text so far
    and then each chunk live, and so does the first tab, now through Redis; neither misses or repeats a
    character, and both equal the saved reply."""
    a, b = servers
    upstream.reset()
    chunks = ["Read here. ", "Still only here. ", "Now also there. ", "The end."]
    gates = enqueue_gated(upstream, chunks, End())
    try:
        await user.login(a.url, "quiet", "quiet-pass-1")
        with RedisMonitor(private_redis) as monitor:
            status, fragment = await user.post(a.url + "/c/start/", {"text": "Here first"})
            assert status == 200, fragment
            path = sse_path(fragment)
            _, reply_id = ids(path)
            audience = f"asgi:group:reply.{reply_id}"
            tabs = {"beside the producer": a.url, "on the other process": b.url}
            received = dict.fromkeys(tabs, "")
            have = {tab: [asyncio.Event() for _ in chunks] for tab in tabs}

            async def follow(tab: str) -> str:
                async for event in user.events(tabs[tab] + path):
                    if event.event == "delta":
                        received[tab] += html.unescape(event.data)
                        for k in range(len(chunks)):
                            if received[tab] == "".join(chunks[: k + 1]):
                                assert sent(upstream) == received[tab]  # chunk k+1 is held upstream
                                have[tab][k].set()
                    elif event.event == "done":
                        return event.data
                raise AssertionError("stream ended without done")

            here, there = tabs
            followers = [asyncio.create_task(follow(here))]
            await asyncio.wait_for(have[here][0].wait(), BOUND)
            gates[0].set()
            await asyncio.wait_for(have[here][1].wait(), BOUND)
            assert monitor.published(audience) == 0  # two chunks live, none through Redis

            followers.append(asyncio.create_task(follow(there)))
            await asyncio.wait_for(have[there][1].wait(), BOUND)  # the text so far, from A's memory
            for k in (1, 2):
                gates[k].set()
                for tab in tabs:
                    await asyncio.wait_for(have[tab][k + 1].wait(), BOUND)
            gates[3].set()
            finals = await asyncio.wait_for(asyncio.gather(*followers), BOUND)
            through_redis = monitor.published(audience)
        row = db_row(database, reply_id)
        assert row["status"] == "complete", row
        assert list(received.values()) == [row["content"]] * 2 and row["content"] == "".join(chunks)
        assert finals[0] == finals[1]
        assert through_redis >= 2  # chunks 2 and 3 (and `end`), once the tab on B had asked for its sync
        print(f"audience PUBLISHes: 0 while read beside the producer, {through_redis} once also elsewhere")
    finally:
        for gate in gates:
            gate.set()


async def test_a_reply_read_beside_its_producer_streams_to_the_end_while_redis_is_down(
    servers: list[DaphneProcess],
    upstream: FakeAnthropic,
    database: str,
    private_redis: RedisServer,
    user: LiveClient,
) -> None:
    """Redis dies after the first chunk of a reply whose tab reads beside the producer: the rest still
    arrives live (chunk k while chunk k+1 is held upstream) and ends with `done`, Redis still down; the
    text equals the saved reply. Once Redis is back, a reply posted on one process streams from the other."""
    a, b = servers
    upstream.reset()
    chunks = ["Before. ", "Redis is down. ", "Still down."]
    gates = enqueue_gated(upstream, chunks, End())
    try:
        await user.login(a.url, "quiet", "quiet-pass-1")
        status, fragment = await user.post(a.url + "/c/start/", {"text": "Without Redis"})
        assert status == 200, fragment
        path = sse_path(fragment)
        conversation_id, reply_id = ids(path)
        received = ""
        final = ""
        async with asyncio.timeout(2 * BOUND):
            async for event in user.events(a.url + path):
                if event.event == "delta":
                    received += html.unescape(event.data)
                    for k in range(len(chunks)):
                        if received == "".join(chunks[: k + 1]):
                            assert sent(upstream) == received  # live: the next chunk is held upstream
                            if k == 0:
                                private_redis.kill()
                            gates[k].set()
                elif event.event == "done":
                    final = event.data
                    break
        assert private_redis.process is not None and private_redis.process.poll() is not None  # still down
        row = db_row(database, reply_id)
        assert row["status"] == "complete", row
        assert received == row["content"] == "".join(chunks) and "Still down." in final
    finally:
        for gate in gates:
            gate.set()
        if private_redis.process is None or private_redis.process.poll() is not None:
            private_redis.start()

    # Redis is back: the processes reach each other again (their layers reconnect on their own).
    await posted_on_one_read_live_on_other(user, upstream, database, b.url, a.url, conversation_id)
