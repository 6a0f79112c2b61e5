"""Caps on the stream path: open streams per user, and one final rendering however many subscribers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from chat.streaming import caps
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
    gate = threading.Event()
    upstream.enqueue(Text("One **bold** answer "), Wait(gate, 30), Text("for all."), End())
    _, reply, path = await start_conversation(alice_client)
    streams: list[Stream] = [await alice_client.open_stream(path) for _ in range(12)]
    for stream in streams:
        assert (await stream.next_event()).data == "One **bold** answer "
    renders_before = caps.final_renders.renders

    gate.set()
    finals = []
    for stream in streams:
        events = await stream.events_until("done")
        finals.append(events[-1].data)
        assert "One **bold** answer " + streamed_text(events) == (await reload(reply)).content
    assert len(set(finals)) == 1 and "<strong>bold</strong>" in finals[0]
    assert caps.final_renders.renders - renders_before == 1  # not 12

    # A late reader of the finished reply gets the same rendering, still without rendering again.
    late = await alice_client.open_stream(path)
    late_events = await late.events_until("done")
    assert late_events[-1].data == finals[0]
    assert caps.final_renders.renders - renders_before == 1
    await asyncio.gather(*(stream.drain() for stream in [*streams, late]))
