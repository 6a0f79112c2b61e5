"""Admission control under the real ASGI handler and the fake upstream: past CHAT_MAX_ACTIVE_REPLIES a new
reply is refused at once (503, Retry-After, the composer's error) on every path that starts one, nothing is
saved and the upstream is never called; running replies go on untouched; a slot comes back when a start
fails and when a reply ends, however it ends. Past CHAT_MAX_CONCURRENT_STARTS a start waits its turn before
any database work, in order, and one whose client hangs up while it waits leaves nothing behind."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator

from chat.models import Conversation, Message
from chat.streaming import admission
from tests.support.asgi_client import AsgiClient, Response, stream_path
from tests.support.fake_anthropic import End, FakeAnthropic, HTTPError, Text, Wait
from tests.support.settings_process import settings_value
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


async def test_starts_past_the_concurrent_bound_wait_their_turn_in_order(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    """While the one place is taken (here by the test itself), two starts wait before any database work:
    nothing saved, the upstream not called, each holding its admission slot. Given the place, they commit
    and stream one after the other, in the order they came."""
    settings.CHAT_MAX_CONCURRENT_STARTS = 1
    upstream.enqueue(Text("Answer to the first."), End())
    upstream.enqueue(Text("Answer to the second."), End())
    async with admission.starting():
        first = asyncio.create_task(alice_client.request("POST", "/c/start/", data={"text": "First"}))
        await until(lambda: admission.starts_waiting() == 1, "the first start waits for the place")
        second = asyncio.create_task(alice_client.request("POST", "/c/start/", data={"text": "Second"}))
        await until(lambda: admission.starts_waiting() == 2, "the second start waits behind it")
        assert await counts() == (0, 0) and upstream.requests == []
        assert admission.active() == 2 and not first.done() and not second.done()
    responses = [await first, await second]
    assert [r.status for r in responses] == [200, 200]
    assert admission.starts_waiting() == 0
    for response, question in zip(responses, ("First", "Second"), strict=True):
        _, events = await follow(alice_client, stream_path(response.text))
        # The upstream answers in the order it is asked: each reply's own answer means the first committed
        # and called the model first.
        assert streamed_text(events) == f"Answer to the {question.lower()}."
    first_id, second_id = [
        pk async for pk in Message.objects.filter(role="user").order_by("pk").values_list("pk", flat=True)
    ]
    assert (await Message.objects.aget(pk=first_id)).content == "First"
    assert (await Message.objects.aget(pk=second_id)).content == "Second"
    await until(lambda: admission.active() == 0, "every slot is given back")


async def test_a_start_whose_client_hangs_up_while_it_waits_saves_nothing_and_frees_its_slot(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_MAX_CONCURRENT_STARTS = 1
    async with admission.starting():
        communicator = await alice_client.begin("POST", "/c/start/", data={"text": "Never mind"})
        await until(lambda: admission.starts_waiting() == 1, "the start waits for the place")
        await hang_up(communicator)
        await until(
            lambda: admission.starts_waiting() == 0 and admission.active() == 0,
            "the start left the queue and gave its slot back",
        )
    assert await counts() == (0, 0) and upstream.requests == []
    # The place is free again: the next start runs at once.
    upstream.enqueue(Text("Here."), End())
    _, reply, path = await start_conversation(alice_client, "Again")
    _, events = await follow(alice_client, path)
    assert streamed_text(events) == "Here."
    assert (await reload(reply)).status == Message.Status.COMPLETE


async def test_with_no_concurrent_bound_starts_never_wait(settings: Any) -> None:
    settings.CHAT_MAX_CONCURRENT_STARTS = 0
    async with admission.starting(), admission.starting(), admission.starting():
        assert admission.starts_waiting() == 0


def test_a_negative_concurrent_bound_is_refused_at_start_up() -> None:
    name = "CHAT_MAX_CONCURRENT_STARTS"
    unset = ("DEBUG", "SECRET_KEY", name)
    assert settings_value({"DEBUG": "True"}, name, unset=unset) == "2"
    with pytest.raises(AssertionError, match=f"{name} must be 0 \\(no bound\\) or more, not -1"):
        settings_value({"DEBUG": "True", name: "-1"}, name, unset=unset)


async def hang_up(communicator: ApplicationCommunicator) -> None:
    """The client goes away before its response: `http.disconnect`, then the application ends."""
    await communicator.send_input({"type": "http.disconnect"})
    try:
        await communicator.wait(timeout=10)
    except asyncio.CancelledError:  # the application's task was cancelled: what a disconnect does
        pass
