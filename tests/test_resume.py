"""A reply outlives its connection: resume from an offset, many tabs, retry, continue, limits, reaping."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from chat.models import Conversation, Message
from chat.streaming import lifecycle
from tests.support.asgi_client import AsgiClient
from tests.support.caching import without_breakpoints
from tests.support.fake_anthropic import End, ErrorEvent, FakeAnthropic, Sleep, Text, Wait
from tests.support.streams import eventually, follow, reload, start_conversation, streamed_text

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_late_subscriber_gets_text_so_far_then_live_tail(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("Early "), Text("words. "), Wait(gate, timeout=30), Text("Late words."), End())
    _, reply, path = await start_conversation(alice_client)
    first = await alice_client.open_stream(path)
    seen = ""
    while seen != "Early words. ":
        seen += (await first.next_event()).data
    # A second tab (or a reload) arrives mid-reply: it catches up from memory, not from the throttled DB row.
    second = await alice_client.open_stream(path)
    catch_up = await second.next_event()
    assert catch_up.data.startswith("Early ")
    gate.set()
    events1, events2 = await first.events_until("done"), await second.events_until("done")
    reply = await reload(reply)
    assert reply.content == "Early words. Late words."
    assert seen + streamed_text(events1) == reply.content
    assert catch_up.data + streamed_text(events2) == reply.content


async def test_last_event_id_wins_over_offset_and_finished_replies_replay_from_offset(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text("0123456789"), End())
    _, _reply, path = await start_conversation(alice_client)
    await follow(alice_client, path)
    base = path.split("?")[0]
    _, events = await follow(alice_client, base + "?offset=4")
    assert streamed_text(events) == "456789"
    stream = await alice_client.open_stream(base + "?offset=4", headers={"Last-Event-ID": "7"})
    events = await stream.events_until("done")
    assert streamed_text(events) == "789"
    assert events[-1].id == "10"


async def test_random_disconnects_and_reconnects_lose_and_repeat_nothing(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    rng = random.Random(20261120)
    words = [f"w{i}" + ("\n" if i % 7 == 0 else " ") for i in range(120)]
    steps: list[Any] = []
    for word in words:
        steps += [Text(word), Sleep(0.01)]
    upstream.enqueue(*steps, End())
    _, reply, path = await start_conversation(alice_client)
    base = path.split("?")[0]
    received, last_id, reconnects = "", 0, 0
    while True:
        # Reconnect the way browsers do: Last-Event-ID on some, the offset query parameter on others.
        if rng.random() < 0.5:
            stream = await alice_client.open_stream(base, headers={"Last-Event-ID": str(last_id)})
        else:
            stream = await alice_client.open_stream(f"{base}?offset={last_id}")
        budget = rng.randint(1, 4)
        done = False
        while budget:
            event = await stream.next_event(timeout=10)
            if event.event == "done":
                done = True
                break
            received += event.data
            last_id = int(event.id or 0)
            assert last_id == len(received)
            budget -= 1
        if done:
            break
        await stream.disconnect()
        reconnects += 1
        await asyncio.sleep(rng.random() * 0.03)
    reply = await reload(reply)
    assert reply.status == Message.Status.COMPLETE
    assert received == reply.content == "".join(words)
    assert reconnects >= 5
    # And from random offsets of the finished reply, read from the database.
    for _ in range(20):
        offset = rng.randint(0, len(reply.content))
        _, events = await follow(alice_client, f"{base}?offset={offset}")
        assert streamed_text(events) == reply.content[offset:]


async def test_retry_regenerates_and_keeps_the_old_attempt(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text("Half an ans"), ErrorEvent())
    upstream.enqueue(Text("A whole answer."), End())
    conversation, reply, path = await start_conversation(alice_client, "Question?")
    await follow(alice_client, path)
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/retry/")
    assert response.status == 200
    new = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert new is not None and new.pk != reply.pk
    assert f'id="msg-{new.pk}"' in response.text and "sse-connect" in response.text
    _, _events = await follow(alice_client, f"/c/{conversation.pk}/m/{new.pk}/stream/")
    assert (await reload(new)).content == "A whole answer."
    old = await reload(reply)
    # Nothing is lost: the old attempt is an alternative of the new one, off the visible path.
    assert old.content == "Half an ans" and old.parent_id == new.parent_id
    assert (await Conversation.objects.aget(pk=conversation.pk)).current_id == new.pk
    # The retried request does not carry the failed attempt.
    assert without_breakpoints(upstream.requests[1]["body"]["messages"]) == [
        {"role": "user", "content": "Question?"}
    ]
    page = await alice_client.request("GET", f"/c/{conversation.pk}/", htmx=False)
    assert "Half an ans" not in page.text and "A whole answer." in page.text


async def test_continue_goes_on_from_the_partial_in_the_same_message(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text("The first half, "), ErrorEvent())
    upstream.enqueue(Text("and the second half."), End(output_tokens=5, input_tokens=30))
    conversation, reply, path = await start_conversation(alice_client, "Tell me")
    await follow(alice_client, path)
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/continue/")
    assert response.status == 200 and "sse-connect" in response.text
    assert "offset=15" in response.text  # the trailing space is trimmed for the API's prefill rule
    _, events = await follow(alice_client, f"/c/{conversation.pk}/m/{reply.pk}/stream/?offset=15")
    reply = await reload(reply)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "The first half,and the second half."
    assert streamed_text(events) == "and the second half."
    assert without_breakpoints(upstream.requests[1]["body"]["messages"])[-1] == {
        "role": "assistant",
        "content": "The first half,",
    }
    assert reply.input_tokens == 12 + 30  # usage adds up across the attempt and its continuation


async def test_continue_and_retry_refuse_a_reply_that_is_still_streaming(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("busy"), Wait(gate, timeout=30), End())
    conversation, reply, path = await start_conversation(alice_client)
    for action in ("retry", "continue"):
        response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/{action}/")
        assert response.status == 409
    gate.set()
    await follow(alice_client, path)
    assert await Message.objects.filter(conversation=conversation).acount() == 2


async def test_per_user_cap_on_concurrent_generations(
    alice_client: AsgiClient, bob_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_MAX_CONCURRENT_PER_USER = 1
    gate = threading.Event()
    upstream.enqueue(Text("slow"), Wait(gate, timeout=30), End())
    upstream.enqueue(Text("bob's"), End())
    _, _, path = await start_conversation(alice_client)
    response = await alice_client.request("POST", "/c/start/", data={"text": "another"})
    assert response.status == 422 and "You already have 1 reply being written" in response.text
    assert await Conversation.objects.acount() == 1  # nothing was saved
    _, _, bob_path = await start_conversation(bob_client)  # other users are not affected
    await follow(bob_client, bob_path)
    gate.set()
    await follow(alice_client, path)


async def test_a_reply_whose_process_died_is_marked_interrupted(
    alice_client: AsgiClient, background: Any, alice: Any
) -> None:
    conversation = await Conversation.objects.acreate(user=alice, title="t")
    await Message.objects.acreate(conversation=conversation, role="user", content="q")
    orphan = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        status="streaming",
        content="Half",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    stream = await alice_client.open_stream(f"/c/{conversation.pk}/m/{orphan.pk}/stream/?offset=0")
    await lifecycle.reap_once()  # the process's own reaper may already have done it
    events = await stream.events_until("done", timeout=10)
    orphan = await reload(orphan)
    assert orphan.status == Message.Status.INTERRUPTED and orphan.content == "Half"
    assert streamed_text(events) == "Half"
    assert "Retry" in events[-1].data and "Continue" in events[-1].data


async def test_subscriber_notices_a_dead_producer_without_any_reaper(
    alice_client: AsgiClient, background: Any, alice: Any, settings: Any
) -> None:
    """No `end` will ever be published: the subscriber sees the lapsed lease itself and finishes."""
    conversation = await Conversation.objects.acreate(user=alice, title="t")
    orphan = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        status="streaming",
        content="Half",
        lease_expires_at=timezone.now() + timedelta(seconds=1),
    )
    stream = await alice_client.open_stream(f"/c/{conversation.pk}/m/{orphan.pk}/stream/?offset=4")
    events = await stream.events_until("done", timeout=15)
    assert (await reload(orphan)).status == Message.Status.INTERRUPTED
    assert "stopped before it finished" in events[-1].data
    await eventually(lambda: True)
