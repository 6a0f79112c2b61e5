"""Caps on the stream path: open streams per user, and one final rendering however many subscribers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.template.loader import render_to_string

from chat.models import Message
from chat.streaming import caps, metrics
from tests.support.asgi_client import AsgiClient, Stream
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.streams import eventually, reload, start_conversation, streamed_text

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_streams_beyond_the_per_user_cap_get_429_and_a_closed_stream_frees_its_slot(
    alice_client: AsgiClient, alice: Any, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_MAX_STREAMS_PER_USER = 3
    gate = threading.Event()
    upstream.enqueue(Text("held "), Wait(gate, 30), Text("open."), End())
    _, _, path = await start_conversation(alice_client)
    streams = [await alice_client.open_stream(path) for _ in range(3)]
    assert [s.status for s in streams] == [200, 200, 200]

    refused = await alice_client.request("GET", path)
    assert refused.status == 429
    assert "Too many open streams: at most 3 per user" in refused.text

    await streams.pop().disconnect()
    await eventually(lambda: caps.open_streams(alice.pk) == 2)
    streams.append(await alice_client.open_stream(path))  # the freed slot is usable again
    assert streams[-1].status == 200

    gate.set()
    for stream in streams:
        events = await stream.events_until("done")
        assert events[-1].event == "done"
        await stream.drain()
    assert caps.open_streams(alice.pk) == 0  # every finished stream gave its slot back


async def test_the_final_rendering_is_made_once_for_many_subscribers(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    """The producer renders the finished reply in its final save's trip and `end` carries it: streams of
    the process generating the reply neither read its row (not at open, not at the end) nor render it
    again. A reader arriving after the end reads the row and renders once, for every later reader too."""
    gate = threading.Event()
    upstream.enqueue(Text("One **bold** answer "), Wait(gate, 30), Text("for all."), End())
    _, reply, path = await start_conversation(alice_client)
    reads_before, renders_before = metrics.counts.snapshot_reads, caps.final_renders.renders
    streams: list[Stream] = [await alice_client.open_stream(path) for _ in range(12)]
    for stream in streams:
        assert (await stream.next_event()).data == "One **bold** answer "

    gate.set()
    finals = []
    for stream in streams:
        events = await stream.events_until("done")
        finals.append(events[-1].data)
        assert "One **bold** answer " + streamed_text(events) == (await reload(reply)).content
    assert len(set(finals)) == 1 and "<strong>bold</strong>" in finals[0]
    saved = await Message.objects.select_related("conversation").aget(pk=reply.pk)
    rendered = await sync_to_async(render_to_string)("chat/conversation.html#message", {"message": saved})
    assert finals[0] == rendered  # the saved row's rendering
    assert metrics.counts.snapshot_reads - reads_before == 0  # not 24
    assert caps.final_renders.renders - renders_before == 0  # not 12

    # A late reader of the finished reply gets the same rendering: one read of the row, one render, for
    # this reader and the next.
    late = await alice_client.open_stream(path)
    later = await alice_client.open_stream(path)
    for stream in (late, later):
        assert (await stream.events_until("done"))[-1].data == finals[0]
    assert metrics.counts.snapshot_reads - reads_before == 2
    assert caps.final_renders.renders - renders_before == 1
    await asyncio.gather(*(stream.drain() for stream in [*streams, late, later]))
