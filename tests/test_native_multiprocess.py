"""Attachments and thinking across two daphne processes on the real PostgreSQL and Redis: a file uploaded to
process A is sent through process B; the reply's thinking, generated on B, streams from A over Redis and
resumes on B from its composite offset."""

from __future__ import annotations

import base64
import html
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest
import redis

from tests.support.cluster import fresh_database, services_or_skip
from tests.support.fake_anthropic import End, FakeAnthropic, Signature, Text, Thinking, Wait
from tests.support.files import image_bytes
from tests.support.live_client import LiveClient, ids, sse_path
from tests.support.live_server import DaphneProcess, manage

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PG_URL = os.environ.get("DATABASE_URL_TEST", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/15")
PASSWORD = "multi-process-pass-1"
SIG = "EqQBCkgIARABGAIiQLcluster"


@pytest.fixture(scope="module")
def native_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FakeAnthropic, str, list[str]]]:
    services_or_skip(PG_URL, REDIS_URL)
    with fresh_database(PG_URL) as db_url:
        yield from _cluster(tmp_path_factory, db_url)


def _cluster(
    tmp_path_factory: pytest.TempPathFactory, db_url: str
) -> Iterator[tuple[FakeAnthropic, str, list[str]]]:
    upstream = FakeAnthropic().start()
    redis.Redis.from_url(REDIS_URL).flushdb()
    data_dir = tmp_path_factory.mktemp("data")  # both processes share it: local attachment storage
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHAT_", "ANTHROPIC_"))},
        "DATABASE_URL": db_url,
        "REDIS_URL": REDIS_URL,
        "DEBUG": "True",
        "DATA_DIR": str(data_dir),
        "CHAT_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": upstream.url,
        "CHAT_UPSTREAM_MAX_RETRIES": "0",
        "CHAT_SAVE_INTERVAL": "0.1",
        "PYTHONUNBUFFERED": "1",
    }
    manage(env, "migrate", "--noinput")
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user('multi', password='{PASSWORD}')",
    )
    log_dir = Path(tmp_path_factory.mktemp("logs"))
    procs = [DaphneProcess(env, log_dir, n).start() for n in ("a", "b")]
    try:
        yield upstream, db_url, [p.url for p in procs]
    finally:
        for proc in procs:
            proc.stop()
        upstream.stop()


@pytest.fixture
async def user() -> AsyncIterator[LiveClient]:
    client = LiveClient()
    yield client
    await client.close()


async def test_upload_on_a_send_on_b_thinking_streams_from_a_and_resumes_on_b(
    native_cluster: tuple[FakeAnthropic, str, list[str]], user: LiveClient
) -> None:
    upstream, db_url, (a, b) = native_cluster
    upstream.reset()
    await user.login(a, "multi", PASSWORD)
    png = image_bytes("PNG", (20, 10))
    form = aiohttp.FormData()
    form.add_field("file", png, filename="pixel.png", content_type="application/octet-stream")
    async with user.session.post(
        a + "/attachments/", data=form, headers={"X-CSRFToken": user.csrf(), "HX-Request": "true"}
    ) as response:
        assert response.status == 200, await response.text()
        chip = await response.text()
    attachment_id = chip.split('name="attachment" value="')[1].split('"')[0]

    more = threading.Event()
    upstream.enqueue(Text("Hi."), End())
    status, fragment = await user.post(b + "/c/start/", {"text": "First"})
    assert status == 200
    conversation_id, _ = ids(sse_path(fragment))
    async for event in user.events(b + sse_path(fragment)):
        if event.event == "done":
            break
    status, _ = await user.post(
        f"{a}/c/{conversation_id}/settings/", {"title": "T", "thinking_budget": "1024"}
    )
    assert status == 302

    upstream.enqueue(
        Thinking("Looking at the pixel. "),
        Wait(more, timeout=30),
        Thinking("Tiny."),
        Signature(SIG),
        Text("A small orange image."),
        End(),
    )
    status, fragment = await user.post(
        f"{b}/c/{conversation_id}/send/", {"text": "What is this?", "attachment": attachment_id}
    )
    assert status == 200, fragment
    path = sse_path(fragment)
    _, reply_id = ids(path)
    first_id = ""
    async for event in user.events(a + path):  # generated on B, followed on A
        assert event.event == "thinking"
        assert html.unescape(event.data) == "Looking at the pixel. "
        first_id = event.id or ""
        break
    assert first_id == "0.22"
    more.set()
    thinking, text = "", ""
    async for event in user.events(b + path.split("?")[0], headers={"Last-Event-ID": first_id}):
        if event.event == "thinking":
            thinking += html.unescape(event.data)
        elif event.event == "delta":
            text += html.unescape(event.data)
        elif event.event == "done":
            break
    assert thinking == "Tiny."
    body = upstream.requests[1]["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    image = body["messages"][-1]["content"][0]
    assert image["type"] == "image" and base64.b64decode(image["source"]["data"]) == png
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT thinking, status FROM chat_message WHERE id = %s", (reply_id,)).fetchone()
    assert row == ("Looking at the pixel. Tiny.", "complete")
    assert text == "A small orange image."
