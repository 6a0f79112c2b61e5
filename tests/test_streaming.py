"""The streaming path under the real ASGI handler, observed chunk by chunk, against the fake upstream."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation, Message
from tests.support.asgi_client import AsgiClient, parse_sse, stream_path
from tests.support.caching import without_breakpoints
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait

pytestmark = [pytest.mark.django_db(transaction=True)]


async def start_conversation(client: AsgiClient, text: str = "Hi there") -> tuple[Conversation, str]:
    response = await client.request("POST", "/c/start/", data={"text": text})
    assert response.status == 200, response.text
    conversation = await Conversation.objects.alast()
    assert conversation is not None
    return conversation, stream_path(response.text)


async def test_first_token_reaches_client_before_upstream_sends_the_second(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    go = threading.Event()
    upstream.enqueue(Text("Hel"), Wait(go, timeout=10), Text("lo, "), Text("world"), End(output_tokens=3))
    conversation, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "private, no-store"
    assert stream.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in stream.headers

    first = await stream.next_event(timeout=15)
    # Causality: the upstream is still blocked before its second delta, yet the client has the first.
    assert not go.is_set()
    assert [t for t, _ in upstream.sent] == ["Hel"]
    assert (first.event, first.data, first.id) == ("delta", "Hel", "3")
    go.set()
    events = await stream.events_until("done")
    deltas = [first.data] + [e.data for e in events if e.event == "delta"]
    assert "".join(deltas) == "Hello, world"

    reply = await Message.objects.aget(conversation=conversation, role="assistant")
    assert reply.content == "Hello, world"
    assert reply.status == Message.Status.COMPLETE
    assert reply.stop_reason == "end_turn"
    assert reply.output_tokens == 3 and reply.input_tokens is not None
    assert reply.ttft_ms is not None and reply.duration_ms is not None
    assert reply.duration_ms >= reply.ttft_ms
    assert f'id="msg-{reply.pk}"' in events[-1].data and "sse-connect" not in events[-1].data
    assert stream.ended or await _ends(stream)


async def _ends(stream: Any) -> bool:
    with pytest.raises(EOFError):
        await stream.next_event(timeout=5)
    return True


async def test_user_text_committed_before_the_model_is_called(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    go = threading.Event()
    upstream.enqueue(Wait(go, timeout=10), Text("ok"), End())
    conversation, path = await start_conversation(alice_client, "Remember this")
    # The upstream has received the request (so the model was called) and the user's text is already saved.
    for _ in range(100):
        if upstream.requests:
            break
        await asyncio.sleep(0.05)
    assert upstream.requests
    user_message = await Message.objects.aget(conversation=conversation, role="user")
    assert user_message.content == "Remember this"
    assert without_breakpoints(upstream.requests[0]["body"]["messages"])[-1] == {
        "role": "user",
        "content": "Remember this",
    }
    go.set()
    stream = await alice_client.open_stream(path)
    await stream.events_until("done")
    assert await sync_to_async(lambda: conversation.messages.count())() == 2


async def test_response_opens_at_once_and_heartbeats_flow_during_a_pause(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_KEEPALIVE_SECONDS = 0.2
    gate = threading.Event()
    upstream.enqueue(Wait(gate, timeout=30), Text("late"), End())
    _, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    # Headers and a first body chunk arrive while the upstream has sent nothing at all; then named
    # `heartbeat` events (the page watches for them to detect a stalled connection).
    first = await stream.communicator.receive_output(5)
    assert first["body"].startswith(b"retry: 1000\n") and upstream.sent == []
    stream.buffer += first["body"].decode()
    while "heartbeat" not in stream.comments:
        stream.comments += parse_sse(
            stream.buffer + (await stream.communicator.receive_output(5))["body"].decode()
        )[1]
    gate.set()
    events = await stream.events_until("done")
    assert [e.data for e in events if e.event == "delta"] == ["late"]


HOSTILE = "evil\n\nevent: done\ndata: <img src=x onerror=alert(1)>\r\nid: 999\r: c\rretry: 1\n"


async def test_model_output_cannot_forge_events_or_inject_markup(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text(HOSTILE), Text("<script>alert(2)</script>"), End())
    conversation, path = await start_conversation(alice_client, "<b>hi</b>\n\nevent: x")
    stream = await alice_client.open_stream(path)
    events = await stream.events_until("done")
    deltas = [e for e in events if e.event == "delta"]
    assert {e.event for e in events[:-1]} == {"delta"} and events[-1].event == "done"  # nothing forged
    assert all(e.id and e.id.isdigit() for e in events)
    raw = b"".join(stream.chunks).decode()
    assert "<img" not in raw and "<script>" not in raw.split("event: done")[0]
    # The browser unescapes the data back to exactly the model's text (every CR travels as &#13;).
    import html as html_lib

    expected = HOSTILE + "<script>alert(2)</script>"
    assert html_lib.unescape("".join(e.data for e in deltas)) == expected
    reply = await Message.objects.aget(conversation=conversation, role="assistant")
    assert reply.content == HOSTILE + "<script>alert(2)</script>"
    final = events[-1].data
    assert "<script>alert(2)" not in final and "<img" not in final and "&lt;script&gt;" in final
    page = await alice_client.request("GET", f"/c/{conversation.pk}/", htmx=False)
    assert "<b>hi</b>" not in page.text and "&lt;b&gt;hi&lt;/b&gt;" in page.text
