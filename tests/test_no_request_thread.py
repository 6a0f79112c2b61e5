"""Issue 15's profile finding, as behaviour: no request holds a thread of its own. Open event streams hold
no thread each (a live daphne, counted through /proc); a new message's POST never starts one either; and
the thread-free sign-in checks still send strangers to the login page and other users' conversations to a
404."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from django.core.signals import request_finished

from chat.models import Message
from tests.support.asgi_client import AsgiClient
from tests.support.edge import PASSWORD, production_env, start_edge_server
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.live_client import LiveClient, sse_path
from tests.support.streams import follow, start_conversation


@pytest.mark.django_db(transaction=True)
async def test_sending_to_someone_elses_conversation_is_a_404_and_saves_nothing(
    alice_client: AsgiClient, bob_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text("Hi."), End())
    conversation, _, path = await start_conversation(alice_client, "Mine")
    await follow(alice_client, path)
    count = await Message.objects.acount()
    response = await bob_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Theirs"})
    assert response.status == 404 and await Message.objects.acount() == count


@pytest.mark.django_db(transaction=True)
async def test_only_the_owner_opens_a_replys_stream_and_only_a_replys(
    alice_client: AsgiClient, bob_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    """The stream's open reads only the message's role (`message_role`), still scoped to its owner and
    conversation: another user's reply, a question, a reply under another conversation's id, or no message at
    all: 404."""
    upstream.enqueue(Text("Hi."), End())
    conversation, _, path = await start_conversation(alice_client, "Mine")
    await follow(alice_client, path)
    upstream.enqueue(Text("Other."), End())
    other, _, other_path = await start_conversation(alice_client, "Other")
    await follow(alice_client, other_path)
    reply = await Message.objects.filter(conversation=conversation, role="assistant").aget()
    question = await Message.objects.filter(conversation=conversation, role="user").aget()
    for client, url in (
        (bob_client, f"/c/{conversation.pk}/m/{reply.pk}/stream/"),
        (alice_client, f"/c/{conversation.pk}/m/{question.pk}/stream/"),
        (alice_client, f"/c/{other.pk}/m/{reply.pk}/stream/"),
        (alice_client, f"/c/{conversation.pk}/m/{reply.pk + 1000}/stream/"),  # no such message
    ):
        response = await client.request("GET", url)
        assert response.status == 404, (url, response.status)
    stream = await alice_client.open_stream(f"/c/{conversation.pk}/m/{reply.pk}/stream/")
    assert stream.status == 200
    await stream.events_until("done")
    await stream.drain()


@contextlib.contextmanager
def finishing_threads() -> Iterator[list[threading.Thread]]:
    """The threads in which requests finish (`request_finished`) while the block runs, in order."""
    threads: list[threading.Thread] = []

    def record(sender: object, **kwargs: object) -> None:
        threads.append(threading.current_thread())

    request_finished.connect(record)
    try:
        yield threads
    finally:
        request_finished.disconnect(record)


@pytest.mark.django_db(transaction=True)
async def test_a_new_message_and_its_stop_start_no_thread_of_their_own(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    """A request that has started a thread of its own (asgiref's per-request executor) is finished in that
    thread (chat.handlers): so every `request_finished` on the event loop's thread means no POST here
    started one. Django's `login_required` on these async views did (its check runs in `sync_to_async`);
    the start views load the user in their one trip to the database threads instead."""
    loop_thread = threading.current_thread()
    with finishing_threads() as finished_in:
        upstream.enqueue(Text("Hi."), End())
        conversation, _, path = await start_conversation(alice_client, "Hello")
        await follow(alice_client, path)
        upstream.enqueue(Text("Again."), Wait(threading.Event(), timeout=30), End())
        sent = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "More"})
        assert sent.status == 200, sent.text
        reply = await Message.objects.filter(role="assistant").alatest("pk")
        stop = await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/stop/")
        assert stop.status == 204
    assert len(finished_in) >= 4 and all(thread is loop_thread for thread in finished_in), finished_in


@pytest.mark.django_db(transaction=True)
async def test_an_anonymous_stream_request_is_sent_to_the_login_page(
    asgi_app: Any, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text("Hi."), End())
    _, _, path = await start_conversation(alice_client, "Hello")
    await follow(alice_client, path)
    response = await AsgiClient(asgi_app).request("GET", path, htmx=False)
    assert response.status == 302 and response.headers["location"].startswith("/accounts/login/?next=")


# --- Open streams hold no thread (a live daphne) ------------------------------------------------------


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


async def _open(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    """An open event stream, once its first frame (`retry`/`: open`) arrived."""
    response = await session.get(url, timeout=aiohttp.ClientTimeout(total=120))
    assert response.status == 200
    await response.content.readuntil(b"\n\n")
    return response


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads through /proc")
async def test_open_streams_hold_no_thread_each(tmp_path: Path) -> None:
    """N replies held open by the upstream, N event streams open on them: the server's thread count grows
    by far less than N (before issue 15 it grew by one thread per stream: each request's own
    thread-sensitive executor, kept until the response ended)."""
    streams = 16
    gate = threading.Event()
    upstream = FakeAnthropic(default_script=[Text("Begun. "), Wait(gate, timeout=120), End()]).start()
    env = production_env(
        tmp_path,
        CHAT_PROVIDER="anthropic",
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=upstream.url,
        CHAT_UPSTREAM_MAX_RETRIES="0",
        CHAT_MAX_CONCURRENT_PER_USER="100",
        CHAT_MESSAGES_PER_MINUTE="1000",
        CHAT_MAX_STREAMS_PER_USER="100",
    )
    server = start_edge_server(env, tmp_path, "threads", "tess")
    assert server.process is not None
    client = LiveClient()
    opened: list[aiohttp.ClientResponse] = []
    try:
        await client.login(server.url, "tess", PASSWORD)
        # Warm up: one whole reply, so the process's long-lived threads (database, executors) exist.
        status, html = await client.post(server.url + "/c/start/", {"text": "warm up"})
        assert status == 200, html
        opened.append(await _open(client.session, server.url + sse_path(html)))
        before = _threads(server.process.pid)
        for number in range(streams):
            status, html = await client.post(server.url + "/c/start/", {"text": f"Stream {number}"})
            assert status == 200, html
            opened.append(await _open(client.session, server.url + sse_path(html)))
        during = _threads(server.process.pid)
        assert during - before < streams // 2, (before, during)
    finally:
        gate.set()
        for response in opened:
            response.close()
        await client.close()
        server.stop()
        upstream.stop()


@pytest.mark.django_db(transaction=True)
async def test_a_request_without_a_session_starts_no_thread_of_its_own(asgi_app: Any) -> None:
    """A health probe carries no session cookie: the idle-renewal check has nothing to read, so it answers
    on the event loop (it hopped to a thread for the empty session: ~0.8 ms of CPU per probe, measured
    in-process on /healthz, 1,000 requests)."""
    loop_thread = threading.current_thread()
    with finishing_threads() as finished_in:
        probe = AsgiClient(asgi_app)
        assert (await probe.request("GET", "/healthz", htmx=False)).status == 200
        assert (await probe.request("GET", "/readyz", htmx=False)).status == 200
    assert len(finished_in) == 2 and all(thread is loop_thread for thread in finished_in), finished_in
