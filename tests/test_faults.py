"""Every upstream fault keeps the partial, says why in plain words, and offers Retry / Continue."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chat.models import Message
from tests.support.asgi_client import AsgiClient
from tests.support.fake_anthropic import Drop, End, ErrorEvent, FakeAnthropic, HTTPError, Stall, Text, Wait
from tests.support.streams import eventually, follow, reload, start_conversation, streamed_text

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True, params=["aiohttp", "httpx"])
def upstream_http(request: pytest.FixtureRequest, settings: Any) -> str:
    """Every fault is told apart the same way under both of the SDK's HTTP transports (CHAT_UPSTREAM_HTTP):
    the aiohttp one maps its own exceptions onto httpx2's, which is what the provider catches."""
    settings.CHAT_UPSTREAM_HTTP = request.param
    return str(request.param)


@pytest.mark.parametrize(
    ("steps", "code", "words"),
    [
        ([ErrorEvent("overloaded_error", "Overloaded")], "overloaded", "overloaded in the middle"),
        ([ErrorEvent("api_error", "Internal failure")], "stream_error", "mid-response: Internal failure"),
        ([Drop()], "dropped", "connection to the model dropped"),
        ([Stall(3.0)], "stalled", "sent nothing for 0.5 seconds"),
        ([], "truncated", "ended before the response was complete"),
    ],
    ids=["error-event", "other-error-event", "dropped-tcp", "stall", "no-message-stop"],
)
async def test_mid_stream_fault_keeps_partial_and_offers_retry_and_continue(
    alice_client: AsgiClient,
    upstream: FakeAnthropic,
    background: Any,
    settings: Any,
    steps: list[Any],
    code: str,
    words: str,
) -> None:
    settings.CHAT_UPSTREAM_READ_TIMEOUT = 0.5
    upstream.enqueue(Text("Partial "), Text("answer"), *steps)
    _, reply, path = await start_conversation(alice_client)
    _, events = await follow(alice_client, path)
    reply = await reload(reply)
    assert reply.content == "Partial answer" == streamed_text(events)
    assert reply.status in (Message.Status.ERROR, Message.Status.INCOMPLETE)
    assert reply.error_code == code
    assert words in reply.error_message
    final = events[-1].data
    assert "Response was cut off." in final and words in final
    assert "Retry" in final and "Continue" in final


@pytest.mark.parametrize(
    ("status", "kind", "words", "retry"),
    [
        (401, "authentication_error", "server configuration problem", False),
        (403, "permission_error", "server configuration problem", False),
        (429, "rate_limit_error", "Too many requests", True),
        (529, "overloaded_error", "overloaded right now", True),
        (500, "api_error", "internal error (HTTP 500)", True),
        (503, "api_error", "internal error (HTTP 503)", True),
    ],
)
async def test_error_before_streaming_is_explained(
    alice_client: AsgiClient,
    upstream: FakeAnthropic,
    background: Any,
    status: int,
    kind: str,
    words: str,
    retry: bool,
) -> None:
    upstream.enqueue(HTTPError(status, kind, "nope"))
    _, reply, path = await start_conversation(alice_client)
    _, events = await follow(alice_client, path)
    reply = await reload(reply)
    assert reply.status == Message.Status.ERROR and reply.content == ""
    assert words in reply.error_message
    assert len(upstream.requests) == 1  # no retry loop (the SDK's own retries are configured separately)
    assert words in events[-1].data
    assert "Continue" not in events[-1].data  # nothing to continue from


async def test_sdk_retries_are_short_and_then_the_reply_streams(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_UPSTREAM_MAX_RETRIES = 2
    upstream.enqueue(HTTPError(529, "overloaded_error", "busy", retry_after=0.05))
    upstream.enqueue(HTTPError(429, "rate_limit_error", "slow down", retry_after=0.05))
    upstream.enqueue(Text("Third time lucky"), End())
    _, reply, path = await start_conversation(alice_client)
    _, _events = await follow(alice_client, path)
    reply = await reload(reply)
    assert reply.status == Message.Status.COMPLETE and reply.content == "Third time lucky"
    assert len(upstream.requests) == 3


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A loopback port whose accept queue is full, so a new connection's handshake never completes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for s in [*fillers, server]:
        s.close()


async def test_connect_timeout(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any, unresponsive_port: int
) -> None:
    settings.ANTHROPIC_BASE_URL = f"http://127.0.0.1:{unresponsive_port}"
    settings.CHAT_UPSTREAM_CONNECT_TIMEOUT = 0.3
    _, reply, path = await start_conversation(alice_client)
    _, events = await follow(alice_client, path)
    reply = await reload(reply)
    assert reply.status == Message.Status.ERROR
    assert reply.error_code in ("timeout", "connection")
    assert "model provider" in events[-1].data


async def test_stop_closes_upstream_keeps_partial_and_every_tab_sees_it(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("One "), Text("two "), Wait(gate, timeout=30), Text("never"), End())
    conversation, reply, path = await start_conversation(alice_client)
    tab1 = await alice_client.open_stream(path)
    tab2 = await alice_client.open_stream(path)
    seen = ""
    while seen != "One two ":
        event = await tab1.next_event()
        seen += event.data
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/stop/")
    assert response.status == 204
    events1 = await tab1.events_until("done", timeout=5)
    events2 = await tab2.events_until("done", timeout=5)
    # The upstream HTTP stream was closed (billing stops) although the upstream never finished.
    await eventually(lambda: upstream.client_disconnects >= 1, timeout=5)
    gate.set()
    reply = await reload(reply)
    assert reply.status == Message.Status.STOPPED and reply.content == "One two "
    assert seen + streamed_text(events1) == reply.content == streamed_text(events2)
    assert "You stopped this response." in events1[-1].data


async def test_stop_via_database_flag_when_the_channel_message_is_lost(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    """The producer also polls the stop flag at each save, so Stop works even if pub/sub drops it."""
    from chat import services

    gate = threading.Event()
    upstream.enqueue(Text("Hello "), Wait(gate, timeout=30), End())
    _, reply, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    await stream.next_event()
    await asyncio.to_thread(services.message_request_stop, reply=reply)  # DB flag only, no channel message
    await stream.events_until("done", timeout=5)
    gate.set()
    assert (await reload(reply)).status == Message.Status.STOPPED


async def test_client_disconnect_does_not_stop_generation(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("Kept "), Wait(gate, timeout=30), Text("going"), End())
    _, reply, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    assert (await stream.next_event()).data == "Kept "
    await stream.disconnect()
    # The partial is saved while the reply is still being written (throttled saves)...
    await eventually(lambda: _content(reply), timeout=5)
    assert (await reload(reply)).status == Message.Status.STREAMING
    gate.set()
    # ...and the reply completes without any viewer.
    await eventually(lambda: _status(reply, Message.Status.COMPLETE), timeout=10)
    assert (await reload(reply)).content == "Kept going"
    assert upstream.client_disconnects == 0


async def _content(reply: Message) -> bool:
    return (await reload(reply)).content == "Kept "


async def _status(reply: Message, status: str) -> bool:
    return (await reload(reply)).status == status
