"""Admission control under the real ASGI handler and the fake upstream: past CHAT_MAX_ACTIVE_REPLIES a new
reply is refused at once (503, Retry-After, the composer's error) on every path that starts one, nothing is
saved and the upstream is never called; running replies go on untouched; a slot comes back when a start
fails and when a reply ends, however it ends."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chat.models import Conversation, Message
from chat.streaming import admission
from tests.support.asgi_client import AsgiClient, Response, stream_path
from tests.support.fake_anthropic import End, FakeAnthropic, HTTPError, Text, Wait
from tests.support.streams import follow, reload, streamed_text
from tests.support.waiting import until

pytestmark = [pytest.mark.django_db(transaction=True)]

BUSY = "The server is busy with too many replies right now. Nothing was saved; try again in 10 seconds."


@pytest.fixture(autouse=True)
def bounded(settings: Any) -> Iterator[None]:
    """Each test starts with no slot taken in this process, and a user may run several replies at once."""
    assert admission.active() == 0, "a slot leaked from an earlier test"
    settings.CHAT_MAX_CONCURRENT_PER_USER = 50
    settings.CHAT_BUSY_RETRY_AFTER = 10
    yield


def assert_busy(response: Response) -> None:
    assert response.status == 503, response.text
    assert response.headers["retry-after"] == "10"
    assert response.headers["hx-retarget"] == "#composer-error"
    assert response.headers["hx-reswap"] == "outerHTML"
    assert BUSY in response.text and 'id="composer-error"' in response.text


async def start_conversation(client: AsgiClient, text: str) -> tuple[Conversation, Message, str]:
    """POST a new conversation's first message; its conversation, reply and the reply's stream path."""
    response = await client.request("POST", "/c/start/", data={"text": text})
    assert response.status == 200, response.text
    path = stream_path(response.text)
    match = re.match(r"/c/(\d+)/m/(\d+)/stream/", path)
    assert match, path
    reply = await Message.objects.select_related("conversation").aget(pk=int(match[2]))
    return reply.conversation, reply, path


async def counts() -> tuple[int, int]:
    return await Conversation.objects.acount(), await Message.objects.acount()


async def test_past_the_bound_a_new_reply_is_refused_at_once_and_nothing_is_saved(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    # An earlier exchange to send, edit, retry and continue on: cut off at max_tokens, so Continue applies.
    upstream.enqueue(Text("Cut "), Text("off"), End(stop_reason="max_tokens"))
    old, old_reply, old_path = await start_conversation(alice_client, "First question")
    await follow(alice_client, old_path)
    assert (await reload(old_reply)).status == Message.Status.INCOMPLETE
    question = await Message.objects.aget(conversation=old, role="user")

    settings.CHAT_MAX_ACTIVE_REPLIES = 2
    gate = threading.Event()
    try:
        for _ in range(2):
            upstream.enqueue(Text("Held "), Wait(gate, timeout=60), Text("reply."), End())
        _, first, first_path = await start_conversation(alice_client, "One")
        _, second, second_path = await start_conversation(alice_client, "Two")
        streams = [await alice_client.open_stream(p) for p in (first_path, second_path)]
        for stream in streams:  # both are generating: their first delta has arrived
            assert (await stream.next_event()).data == "Held "
        assert admission.active() == 2
        before, requests_before, refusals_before = (
            await counts(),
            len(upstream.requests),
            admission.refusals(),
        )

        # Every path that starts a reply is refused, before any of its database work.
        refused = [
            await alice_client.request("POST", "/c/start/", data={"text": "Three"}),
            await alice_client.request("POST", f"/c/{old.pk}/send/", data={"text": "Follow-up"}),
            await alice_client.request("POST", f"/c/{old.pk}/m/{question.pk}/edit/", data={"text": "Edited"}),
            await alice_client.request("POST", f"/c/{old.pk}/m/{old_reply.pk}/retry/"),
            await alice_client.request("POST", f"/c/{old.pk}/m/{old_reply.pk}/continue/"),
        ]
        for response in refused:
            assert_busy(response)
        assert await counts() == before
        assert len(upstream.requests) == requests_before
        assert admission.refusals() == refusals_before + 5
        assert (await reload(old_reply)).content == "Cut off" and admission.active() == 2

        # The running replies go on untouched, to the end.
        gate.set()
        for stream, reply in zip(streams, (first, second), strict=True):
            events = await stream.events_until("done")
            assert "Held " + streamed_text(events) == "Held reply."
            row = await reload(reply)
            assert row.status == Message.Status.COMPLETE, (row.error_code, row.stop_reason, row.content)
    finally:
        gate.set()


async def test_concurrent_starts_never_exceed_the_bound(
    alice_client: AsgiClient, bob_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_MAX_ACTIVE_REPLIES = 3
    gate = threading.Event()
    try:
        for _ in range(8):
            upstream.enqueue(Text("x"), Wait(gate, timeout=60), End())
        clients = [alice_client, bob_client] * 4
        responses = await asyncio.gather(
            *(c.request("POST", "/c/start/", data={"text": f"Start {i}"}) for i, c in enumerate(clients))
        )
        accepted = [(c, r) for c, r in zip(clients, responses, strict=True) if r.status == 200]
        refused = [r for r in responses if r.status != 200]
        assert len(accepted) == 3
        for response in refused:
            assert_busy(response)
        assert admission.active() == 3
        assert await Conversation.objects.acount() == 3
        await until(lambda: len(upstream.requests) == 3, "the three admitted replies call the upstream")
    finally:
        gate.set()
    for client, response in accepted:
        await follow(client, stream_path(response.text))
    await until(lambda: admission.active() == 0, "every slot is given back")
    assert len(upstream.requests) == 3


async def test_a_failed_start_gives_its_slot_back(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    from decimal import Decimal

    from asgiref.sync import sync_to_async
    from django.contrib.auth.models import User
    from django.utils import timezone

    from usage.models import Budget, UsageDaily

    settings.CHAT_MAX_ACTIVE_REPLIES = 1
    # Invalid input: refused by the service after the slot was reserved.
    response = await alice_client.request("POST", "/c/start/", data={"text": "   "})
    assert response.status == 422
    assert admission.active() == 0
    settings.CHAT_MAX_MESSAGE_CHARS = 5
    response = await alice_client.request("POST", "/c/start/", data={"text": "far too long"})
    assert response.status == 422 and admission.active() == 0
    settings.CHAT_MAX_MESSAGE_CHARS = 32000

    # A used-up budget: refused inside the transaction.
    alice = await User.objects.aget(username="alice")
    budget = await Budget.objects.acreate(user=alice, period="monthly", limit_usd=Decimal("0.50"))
    await sync_to_async(UsageDaily.objects.create)(
        day=timezone.localdate(), user=alice, model="claude-sonnet-5-5", replies=1, cost=Decimal("0.50")
    )
    response = await alice_client.request("POST", "/c/start/", data={"text": "Hello?"})
    assert response.status == 422 and "used up" in response.text
    assert admission.active() == 0
    assert await counts() == (0, 0) and upstream.requests == []
    await budget.adelete()

    # The one slot is free: the next start is accepted and runs.
    upstream.enqueue(Text("Accepted."), End())
    _, reply, path = await start_conversation(alice_client, "Now?")
    await follow(alice_client, path)
    assert (await reload(reply)).content == "Accepted."


async def test_a_finished_reply_frees_its_slot(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_MAX_ACTIVE_REPLIES = 1

    # Complete.
    upstream.enqueue(Text("Done."), End())
    _, _, path = await start_conversation(alice_client, "One")
    await follow(alice_client, path)
    await until(lambda: admission.active() == 0, "a completed reply gives its slot back")

    # Error: the upstream refuses.
    upstream.enqueue(HTTPError(529, "overloaded_error", "Overloaded"))
    _, errored, path = await start_conversation(alice_client, "Two")
    await follow(alice_client, path)
    assert (await reload(errored)).status == Message.Status.ERROR
    await until(lambda: admission.active() == 0, "a failed reply gives its slot back")

    # Stopped by its user.
    gate = threading.Event()
    try:
        upstream.enqueue(Text("Stop "), Wait(gate, timeout=60), Text("me"), End())
        conversation, stopped, path = await start_conversation(alice_client, "Three")
        stream = await alice_client.open_stream(path)
        assert (await stream.next_event()).data == "Stop "
        assert_busy(await alice_client.request("POST", "/c/start/", data={"text": "Refused"}))
        stop = await alice_client.request("POST", f"/c/{conversation.pk}/m/{stopped.pk}/stop/")
        assert stop.status == 204
        await stream.events_until("done")
    finally:
        gate.set()
    assert (await reload(stopped)).status == Message.Status.STOPPED
    await until(lambda: admission.active() == 0, "a stopped reply gives its slot back")

    # Interrupted by a drain (the process shutting down).
    gate = threading.Event()
    try:
        upstream.enqueue(Text("Drained "), Wait(gate, timeout=60), End())
        _, drained, path = await start_conversation(alice_client, "Four")
        # Generating (its first delta arrived): a drain now saves it as interrupted.
        await until(lambda: any(text == "Drained " for text, _ in upstream.sent), "the upstream sent a delta")
        report = await background.drain(seconds=0)
        assert report.interrupted == 1
    finally:
        background._draining = False
        gate.set()
    assert (await reload(drained)).status == Message.Status.INTERRUPTED
    assert admission.active() == 0

    # After all of these the one slot is free.
    upstream.enqueue(Text("Next."), End())
    _, reply, path = await start_conversation(alice_client, "Five")
    await follow(alice_client, path)
    assert (await reload(reply)).content == "Next."
