"""Several daphne processes on the real PostgreSQL and Redis, with no sticky routing: a message posted to
process A streams from process B and stops through B; a SIGKILLed process's reply is marked interrupted."""

from __future__ import annotations

import asyncio
import html
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.support.cluster import fresh_database, services_or_skip
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.live_client import LiveClient, ids, sse_path
from tests.support.live_server import DaphneProcess, manage

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PG_URL = os.environ.get("DATABASE_URL_TEST", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/15")
LEASE = 2.0  # seconds; with the reaper every LEASE/2, a dead process's reply is interrupted within 3 s
BOUND = LEASE + LEASE / 2


@pytest.fixture(scope="module")
def cluster_db() -> Iterator[str]:
    """A fresh PostgreSQL database for the server processes, migrated, dropped afterwards."""
    services_or_skip(PG_URL, REDIS_URL)
    with fresh_database(PG_URL) as url:
        yield url


@pytest.fixture(scope="module")
def cluster_upstream() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster_env(
    cluster_db: str, cluster_upstream: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHAT_", "ANTHROPIC_"))},
        "DATABASE_URL": cluster_db,
        "REDIS_URL": REDIS_URL,
        "DEBUG": "True",
        "DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "CHAT_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": cluster_upstream.url,
        "CHAT_UPSTREAM_MAX_RETRIES": "0",
        "CHAT_SAVE_INTERVAL": "0.1",
        "CHAT_LEASE_SECONDS": str(LEASE),
        "CHAT_KEEPALIVE_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    manage(env, "migrate", "--noinput")
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('multi', password='multi-process-pass-1')",
    )
    return env


@pytest.fixture(scope="module")
def servers(
    cluster_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[DaphneProcess]]:
    log_dir = Path(tmp_path_factory.mktemp("logs"))
    procs = [DaphneProcess(cluster_env, log_dir, name).start() for name in ("a", "b")]
    yield procs
    for proc in procs:
        proc.stop()


@pytest.fixture
async def user() -> AsyncIterator[LiveClient]:
    client = LiveClient()
    yield client
    await client.close()


def db_row(url: str, reply_id: int) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT content, status, error_message FROM chat_message WHERE id = %s", (reply_id,)
        ).fetchone()
    assert row is not None
    return {"content": row[0], "status": row[1], "error_message": row[2]}


async def test_post_on_a_stream_on_b_stop_via_b(
    servers: list[DaphneProcess], cluster_upstream: FakeAnthropic, cluster_db: str, user: LiveClient
) -> None:
    a, b = servers
    cluster_upstream.reset()
    gate = threading.Event()
    cluster_upstream.enqueue(
        Text("Served "), Text("by A, "), Text("seen on B"), Wait(gate, timeout=30), Text("!"), End()
    )
    await user.login(a.url, "multi", "multi-process-pass-1")
    status, fragment = await user.post(a.url + "/c/start/", {"text": "Hello cluster"})
    assert status == 200, fragment
    path = sse_path(fragment)
    conversation_id, reply_id = ids(path)
    received = ""
    done = None
    async for event in user.events(b.url + path):
        if event.event == "delta":
            received += html.unescape(event.data)
            if received == "Served by A, seen on B":
                status, _ = await user.post(f"{b.url}/c/{conversation_id}/m/{reply_id}/stop/")
                assert status == 204
        elif event.event == "done":
            done = event
            break
    assert done is not None and "You stopped this response." in done.data
    # The producer in A closed its upstream connection: billing stops.
    deadline = time.monotonic() + 5
    while cluster_upstream.client_disconnects < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert cluster_upstream.client_disconnects >= 1
    gate.set()
    row = db_row(cluster_db, reply_id)
    assert row["status"] == "stopped" and row["content"] == received == "Served by A, seen on B"


async def test_two_tabs_on_two_processes_see_the_same_reply(
    servers: list[DaphneProcess], cluster_upstream: FakeAnthropic, cluster_db: str, user: LiveClient
) -> None:
    a, b = servers
    cluster_upstream.reset()
    words = [f"word{i} " for i in range(60)]
    steps: list[Any] = []
    for word in words:
        steps += [Text(word)]
    cluster_upstream.enqueue(*steps, End())
    await user.login(b.url, "multi", "multi-process-pass-1")
    status, fragment = await user.post(b.url + "/c/start/", {"text": "Two tabs"})
    assert status == 200
    path = sse_path(fragment)

    async def read(base: str) -> str:
        text = ""
        async for event in user.events(base + path):
            if event.event == "delta":
                text += html.unescape(event.data)
            elif event.event == "done":
                return text
        raise AssertionError("no done event")

    on_a, on_b = await asyncio.gather(read(a.url), read(b.url))
    row = db_row(cluster_db, ids(path)[1])
    assert row["status"] == "complete"
    assert on_a == on_b == row["content"] == "".join(words)


async def test_sigkilled_process_reply_is_marked_interrupted_within_the_bound(
    servers: list[DaphneProcess],
    cluster_env: dict[str, str],
    cluster_upstream: FakeAnthropic,
    cluster_db: str,
    user: LiveClient,
    tmp_path: Path,
) -> None:
    _, b = servers
    victim = DaphneProcess(cluster_env, tmp_path, "victim").start()
    try:
        cluster_upstream.reset()
        gate = threading.Event()
        cluster_upstream.enqueue(Text("Partial before the crash"), Wait(gate, timeout=60), End())
        await user.login(victim.url, "multi", "multi-process-pass-1")
        status, fragment = await user.post(victim.url + "/c/start/", {"text": "Crash me"})
        assert status == 200
        path = sse_path(fragment)
        reply_id = ids(path)[1]
        deadline = time.monotonic() + 10
        while db_row(cluster_db, reply_id)["content"] != "Partial before the crash":
            assert time.monotonic() < deadline, "partial never saved"
            await asyncio.sleep(0.05)
        # A viewer on B is following the reply when its producer's process dies.
        viewer = asyncio.create_task(_until_done(user, b.url + path))
        await asyncio.sleep(0.3)
        victim.kill()
        killed_at = time.monotonic()
        while db_row(cluster_db, reply_id)["status"] == "streaming":
            assert time.monotonic() - killed_at < BOUND + 5, "still streaming long after the bound"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - killed_at
        row = db_row(cluster_db, reply_id)
        assert row["status"] == "interrupted" and row["content"] == "Partial before the crash"
        print(f"interrupted {elapsed:.2f}s after SIGKILL (bound {BOUND:.1f}s = lease + reaper interval)")
        assert elapsed <= BOUND + 2.0  # the bound plus scheduling slack on a busy machine
        final = await asyncio.wait_for(viewer, timeout=15)
        assert "Response was cut off." in final and "Retry" in final and "Continue" in final
        # Nothing runs a second copy: the upstream saw exactly one request for this reply.
        assert cluster_upstream.request_count == 1
    finally:
        gate.set()
        victim.stop()


async def _until_done(user: LiveClient, url: str) -> str:
    async for event in user.events(url):
        if event.event == "done":
            return event.data
    raise AssertionError("stream ended without done")
