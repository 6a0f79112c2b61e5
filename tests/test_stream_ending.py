"""Streams ended on purpose: deleting the conversation, or ending a user's or a session's streams (logout,
deactivation), sends open streams a terminal `ended` event that says why, and the response ends.
The reply being written is not affected by a user's or session's ending: it completes and is saved."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chat.models import Message
from chat.streaming import aend_session_streams, aend_user_streams
from tests.support.asgi_client import AsgiClient, session_cookies
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.streams import eventually, reload, start_conversation, streamed_text

pytestmark = [pytest.mark.django_db(transaction=True)]


async def _gone(pk: int) -> bool:
    return not await Message.objects.filter(pk=pk).aexists()


async def _status_is(pk: int, status: str) -> bool:
    return await Message.objects.filter(pk=pk, status=status).aexists()


async def _open_mid_reply(client: AsgiClient, upstream: FakeAnthropic, gate: threading.Event) -> Any:
    upstream.enqueue(Text("Before. "), Wait(gate, timeout=30), Text("After."), End())
    conversation, reply, path = await start_conversation(client)
    stream = await client.open_stream(path)
    seen = ""
    while seen != "Before. ":
        seen += (await stream.next_event()).data
    return conversation, reply, path, stream


async def test_deleting_the_conversation_ends_its_open_streams_with_a_reason(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    gate = threading.Event()
    conversation, reply, _, stream = await _open_mid_reply(alice_client, upstream, gate)
    response = await alice_client.request("POST", f"/c/{conversation.pk}/delete/", data={})
    assert response.status in (200, 302)
    event = await stream.next_event()
    assert event.event == "ended"
    assert 'data-reason="deleted"' in event.data and "deleted" in event.data
    await stream.drain()  # the response ends: no endless open stream
    gate.set()
    await eventually(lambda: _gone(reply.pk))


async def test_ending_a_users_streams_ends_only_theirs_and_the_reply_still_completes(
    alice_client: AsgiClient, bob_client: AsgiClient, upstream: FakeAnthropic, background: Any, bob: Any
) -> None:
    gate = threading.Event()
    _, reply, path, stream = await _open_mid_reply(alice_client, upstream, gate)
    reply = await Message.objects.select_related("conversation").aget(pk=reply.pk)
    alice_id = reply.conversation.user_id
    await aend_user_streams(user_id=bob.pk, reason="deactivated")  # someone else: nothing happens here
    await aend_user_streams(user_id=alice_id, reason="deactivated")
    event = await stream.next_event()
    assert event.event == "ended" and 'data-reason="deactivated"' in event.data
    await stream.drain()
    gate.set()
    # Ending the stream did not stop the reply: it is written to the end and saved.
    await eventually(lambda: _status_is(reply.pk, Message.Status.COMPLETE))
    assert (await reload(reply)).content == "Before. After."
    # A new stream of the finished reply (after signing in again) shows it whole.
    again = await alice_client.open_stream(path)
    events = await again.events_until("done")
    assert streamed_text(events) == "Before. After."


@pytest.fixture
def two_sessions(asgi_app: Any, alice: Any) -> tuple[AsgiClient, AsgiClient]:
    """Alice signed in twice (two browsers): two sessions."""
    return AsgiClient(asgi_app, session_cookies(alice)), AsgiClient(asgi_app, session_cookies(alice))


async def test_ending_a_session_ends_that_sessions_streams_only(
    two_sessions: tuple[AsgiClient, AsgiClient], upstream: FakeAnthropic, background: Any
) -> None:
    first, second = two_sessions
    gate = threading.Event()
    _, _, path, stream1 = await _open_mid_reply(first, upstream, gate)
    stream2 = await second.open_stream(path)
    assert (await stream2.next_event()).data.startswith("Before.")
    await aend_session_streams(session_key=first.cookies["sessionid"], reason="logged_out")
    event = await stream1.next_event()
    assert event.event == "ended" and 'data-reason="logged_out"' in event.data
    await stream1.drain()
    gate.set()
    events = await stream2.events_until("done")  # the other session's tab is untouched
    assert "ended" not in {e.event for e in events}
    assert streamed_text(events).endswith("After.")
