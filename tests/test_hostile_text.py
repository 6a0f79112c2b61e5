"""Text the database cannot store (NUL on PostgreSQL, a lone surrogate anywhere) is cleaned at both edges,
and one such row can never stop the others from being saved. Runs on SQLite and, in the second pass of
scripts/test, on PostgreSQL."""

from __future__ import annotations

import html
import threading
from typing import Any

import pytest
from django.db import connection

from chat.models import Conversation, Message
from chat.streaming.store import Save, lease_deadline, replies_save_batch
from chat.text import REPLACEMENT, clean_model_data, clean_model_text, has_unstorable
from tests.support.asgi_client import AsgiClient
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.live_client import ids
from tests.support.streams import eventually, reload, start_conversation, streamed_text

NUL, SURROGATE = "\x00", "\ud800"


# --- The pure functions ---------------------------------------------------------------------------------


def test_clean_model_text_replaces_one_character_with_one() -> None:
    text = f"a{NUL}b{SURROGATE}c\udfffd 😀 é"
    cleaned = clean_model_text(text)
    assert cleaned == f"a{REPLACEMENT}b{REPLACEMENT}c{REPLACEMENT}d 😀 é"
    assert len(cleaned) == len(text)  # offsets line up with what was streamed
    assert not has_unstorable(cleaned) and has_unstorable(text)
    cleaned.encode("utf-8")  # storable anywhere


def test_clean_model_data_cleans_keys_and_nested_values() -> None:
    data = {f"k{NUL}": [f"v{SURROGATE}", {"n": 1, "s": NUL}], "ok": True}
    assert clean_model_data(data) == {
        f"k{REPLACEMENT}": [f"v{REPLACEMENT}", {"n": 1, "s": REPLACEMENT}],
        "ok": True,
    }


# --- The flush: one refused row never stops the others ----------------------------------------------------


def _streaming_reply(conversation: Conversation) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        lease_expires_at=lease_deadline(),
    )


@pytest.mark.django_db(transaction=True)
def test_a_batch_save_isolates_the_row_the_database_refuses(alice: Any) -> None:
    conversation = Conversation.objects.create(user=alice)
    # A lone surrogate fails on every database; NUL only where text cannot hold it.
    hostile = [f"bad {SURROGATE} text"] + ([f"bad {NUL} text"] if connection.vendor == "postgresql" else [])
    good = _streaming_reply(conversation)
    bad = [_streaming_reply(conversation) for _ in hostile]
    renewed = _streaming_reply(conversation)
    saves: list[Save] = [(reply.pk, text, 5) for reply, text in zip(bad, hostile, strict=True)]
    saves.insert(len(saves) // 2, (good.pk, "good text", 7))
    leases_before = {m.pk: m.lease_expires_at for m in Message.objects.all()}

    result = replies_save_batch(saves=saves, renew=[renewed.pk])

    assert sorted(result.failed) == sorted(reply.pk for reply in bad)
    assert result.gone == [] and result.stop_requested == []
    good.refresh_from_db()
    assert (good.content, good.ttft_ms) == ("good text", 7)
    for reply in [*bad, renewed]:
        reply.refresh_from_db()
        assert reply.content == "" and reply.status == Message.Status.STREAMING
        # Still alive: a failed save must not let the reaper take a reply whose producer runs.
        before = leases_before[reply.pk]
        assert reply.lease_expires_at is not None and before is not None
        assert reply.lease_expires_at >= before


# --- End to end: a hostile reply next to a normal one -----------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_hostile_reply_next_to_a_normal_one_both_saved_and_streamed_exactly(
    alice_client: AsgiClient, bob_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    alice_gate, bob_gate = threading.Event(), threading.Event()
    upstream.enqueue(Text("A normal "), Wait(alice_gate, 30), Text("reply."), End())
    _, alice_reply, alice_path = await start_conversation(alice_client, "Hello")
    alice_stream = await alice_client.open_stream(alice_path)
    alice_seen = (await alice_stream.next_event()).data
    assert alice_seen == "A normal "  # alice's reply is under way before bob's starts

    upstream.enqueue(Text(f"nul{NUL} "), Text(f"lone{SURROGATE} "), Wait(bob_gate, 30), Text("end."), End())
    _, _, bob_path = await start_conversation(bob_client, "Break it")
    bob_reply = await Message.objects.aget(pk=ids(bob_path)[1])  # the stream's own reply
    bob_stream = await bob_client.open_stream(bob_path)
    bob_seen = ""
    while bob_seen != f"nul{REPLACEMENT} lone{REPLACEMENT} ":
        bob_seen += html.unescape((await bob_stream.next_event()).data)

    # Both replies are in the same flush now: each one's partial text reaches the database.
    async def partials_saved() -> bool:
        alice_row, bob_row = await reload(alice_reply), await reload(bob_reply)
        return alice_row.content == "A normal " and bob_row.content == bob_seen

    await eventually(partials_saved)

    alice_gate.set()
    bob_gate.set()
    alice_events = await alice_stream.events_until("done")
    bob_events = await bob_stream.events_until("done")
    alice_reply, bob_reply = await reload(alice_reply), await reload(bob_reply)
    assert (alice_reply.status, alice_reply.content) == (Message.Status.COMPLETE, "A normal reply.")
    assert alice_seen + streamed_text(alice_events) == alice_reply.content
    assert bob_reply.status == Message.Status.COMPLETE
    assert bob_reply.content == f"nul{REPLACEMENT} lone{REPLACEMENT} end."
    assert bob_seen + streamed_text(bob_events) == bob_reply.content  # live text == saved text


# --- The user's edge: refused with a clear 422, nothing saved ---------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_user_message_with_nul_is_refused_with_422_and_nothing_saved(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    response = await alice_client.request("POST", "/c/start/", data={"text": f"hello{NUL}world"})
    assert response.status == 422
    assert "NUL character" in response.text
    assert await Conversation.objects.acount() == 0 and await Message.objects.acount() == 0

    upstream.enqueue(Text("Fine."), End())
    conversation, _, _ = await start_conversation(alice_client, "A clean first message")
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": f"again{NUL}"})
    assert response.status == 422 and "NUL character" in response.text
    assert await Message.objects.filter(conversation=conversation).acount() == 2  # the first exchange only
    assert not await Message.objects.filter(content__contains="again").aexists()
