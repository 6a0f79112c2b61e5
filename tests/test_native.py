"""Claude-native content end to end (real SDK, fake Anthropic server over HTTP): attachments sent as image and
document blocks before the text, on the first and every later turn; extended thinking streamed as its own
event with its own offsets, saved, resumed, and its signed blocks replayed exactly in later turns and tool
rounds; Stop and Continue with thinking."""

from __future__ import annotations

import base64
import html
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from chat import services
from chat.models import Attachment, Conversation, Message
from chat.streaming import pubsub
from chat.streaming.sse import parse_position, stream_position
from chat.streaming.store import lease_deadline
from tests.support.asgi_client import AsgiClient, SSEEvent, stream_path
from tests.support.caching import without_breakpoints
from tests.support.fake_anthropic import (
    End,
    ErrorEvent,
    FakeAnthropic,
    RedactedThinking,
    Signature,
    Text,
    Thinking,
    ToolUse,
    Wait,
    request_problem,
)
from tests.support.files import image_bytes, pdf_bytes
from tests.support.streams import follow, reload, streamed_text

SIG = "EqQBCkgIARABGAIiQL" + "x" * 40  # opaque, as the API's signatures are


def thought(events: list[SSEEvent]) -> str:
    return "".join(html.unescape(e.data) for e in events if e.event == "thinking")


def b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode()


# --- Pure functions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "thinking", "id_"), [(0, 0, "0"), (12, 0, "12"), (12, 7, "12.7"), (0, 3, "0.3")]
)
def test_stream_positions_round_trip(text: int, thinking: int, id_: str) -> None:
    assert stream_position(text, thinking) == id_
    assert parse_position(id_) == (text, thinking)


@pytest.mark.parametrize("bad", [None, "", "x", "1.y", "-"])
def test_malformed_positions_are_ignored(bad: str | None) -> None:
    assert parse_position(bad) is None


def test_the_fake_refuses_what_the_api_refuses() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}
    assert "unsupported image" in str(request_problem({"messages": [{"role": "user", "content": [image]}]}))
    thinking = {"type": "enabled", "budget_tokens": 2048}
    assert "max_tokens" in str(request_problem({"thinking": thinking, "max_tokens": 2048, "messages": []}))
    prefill = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "partial"}]
    assert "prefill" in str(request_problem({"thinking": thinking, "max_tokens": 9000, "messages": prefill}))
    unsigned = [{"role": "assistant", "content": [{"type": "thinking", "thinking": "x", "signature": ""}]}]
    assert "signature" in str(request_problem({"messages": unsigned}))


async def test_the_sdk_reads_the_fakes_thinking_wire_format_into_signed_blocks(
    fake_server: FakeAnthropic,
) -> None:
    """The fake's thinking frames are what the SDK's own accumulator understands: thinking with its signature,
    redacted_thinking, then text, in order."""
    import anthropic

    fake_server.reset()
    fake_server.enqueue(
        Thinking("Step one. "),
        Thinking("Step two."),
        Signature(SIG),
        RedactedThinking("opaque=="),
        Text("Done."),
        End(),
    )
    async with anthropic.AsyncAnthropic(api_key="k", base_url=fake_server.url, max_retries=0) as client:
        async with client.messages.stream(
            model="m",
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Think"}],
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
    assert [block.model_dump() for block in final.content] == [
        {"type": "thinking", "thinking": "Step one. Step two.", "signature": SIG},
        {"type": "redacted_thinking", "data": "opaque=="},
        {"type": "text", "text": "Done.", "citations": None},
    ]
    assert "thinking" in kinds and "signature" in kinds  # the helper's per-delta events
    assert fake_server.requests[0]["body"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}


# --- Attachments in the request ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_attachments_are_sent_as_blocks_before_the_text_on_the_first_and_later_turns(
    alice: User, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    png, pdf = image_bytes("PNG", (32, 32)), pdf_bytes(2)
    image = await sync_to_async(services.attachment_create)(owner=alice, data=png, name="chart.png")
    document = await sync_to_async(services.attachment_create)(owner=alice, data=pdf, name="paper.pdf")
    upstream.enqueue(Text("I see a chart and a paper."), End())
    response = await alice_client.request(
        "POST", "/c/start/", data={"text": "What are these?", "attachment": [str(image.pk), str(document.pk)]}
    )
    assert response.status == 200, response.text
    conversation = await Conversation.objects.aget()
    await follow(alice_client, stream_path(response.text))
    image_block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(png)}}
    document_block = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(pdf)},
    }
    first_turn = {
        "role": "user",
        "content": [image_block, document_block, {"type": "text", "text": "What are these?"}],
    }
    assert without_breakpoints(upstream.requests[0]["body"]["messages"]) == [first_turn]
    # The exchange shows the thumbnail and the chip at once.
    assert f"/attachments/{image.pk}/file/" in response.text and "paper.pdf" in response.text

    # A later turn, with a new image only (no text): the history carries the first turn's blocks unchanged.
    gif = image_bytes("GIF", (8, 8))
    third = await sync_to_async(services.attachment_create)(owner=alice, data=gif, name="dot.gif")
    upstream.enqueue(Text("A dot."), End())
    response = await alice_client.request(
        "POST", f"/c/{conversation.pk}/send/", data={"text": "", "attachment": [str(third.pk)]}
    )
    assert response.status == 200, response.text
    await follow(alice_client, stream_path(response.text))
    gif_block = {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": b64(gif)}}
    assert without_breakpoints(upstream.requests[1]["body"]["messages"]) == [
        first_turn,
        {"role": "assistant", "content": "I see a chart and a paper."},
        {"role": "user", "content": [gif_block]},
    ]
    assert await Attachment.objects.filter(conversation=conversation, message__isnull=False).acount() == 3


@pytest.mark.django_db(transaction=True)
async def test_an_attachment_that_is_not_yours_is_refused_and_nothing_is_sent(
    alice_client: AsgiClient, bob: User, upstream: FakeAnthropic, background: Any
) -> None:
    theirs = await sync_to_async(services.attachment_create)(owner=bob, data=image_bytes(), name="b.png")
    response = await alice_client.request(
        "POST", "/c/start/", data={"text": "hi", "attachment": [str(theirs.pk)]}
    )
    assert response.status == 422 and "no longer available" in response.text
    assert await Conversation.objects.acount() == 0 and upstream.request_count == 0


# --- Extended thinking --------------------------------------------------------------------------------


async def _thinking_conversation(user: User, budget: int = 1024) -> Conversation:
    conversation = await sync_to_async(services.conversation_create)(user=user)
    await sync_to_async(services.conversation_update)(conversation=conversation, thinking_budget=budget)
    return conversation


@pytest.mark.django_db(transaction=True)
async def test_thinking_streams_first_with_its_own_offsets_is_saved_and_replayed_exactly(
    alice: User, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    conversation = await _thinking_conversation(alice, 4096)
    upstream.enqueue(
        Thinking("The user greets me. "),
        Thinking("<b>I</b> should greet back."),
        Signature(SIG),
        Text("Hello"),
        Text(" there!"),
        End(),
    )
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Hi"})
    assert response.status == 200
    _, events = await follow(alice_client, stream_path(response.text))
    body = upstream.requests[0]["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["max_tokens"] == settings.CHAT_MAX_TOKENS + 4096
    kinds = [e.event for e in events if e.event in ("thinking", "delta")]
    assert kinds.index("delta") > kinds.index("thinking") and "thinking" not in kinds[kinds.index("delta") :]
    thinking_text = "The user greets me. <b>I</b> should greet back."
    assert thought(events) == thinking_text
    assert "&lt;b&gt;" in "".join(e.data for e in events if e.event == "thinking")  # escaped on the wire
    assert streamed_text(events) == "Hello there!"
    # Every id is the client's whole position: answer offset, then thinking offset.
    assert [e.id for e in events if e.event == "thinking"][-1] == f"0.{len(thinking_text)}"
    assert [e.id for e in events if e.event == "delta"][-1] == f"12.{len(thinking_text)}"
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert reply is not None and reply.status == Message.Status.COMPLETE
    assert reply.thinking == thinking_text and reply.content == "Hello there!"
    signed = {"type": "thinking", "thinking": thinking_text, "signature": SIG}
    assert reply.blocks == [
        {"role": "assistant", "content": [signed, {"type": "text", "text": "Hello there!"}]}
    ]
    assert "Thinking</summary>" in events[-1].data and "&lt;b&gt;I&lt;/b&gt;" in events[-1].data

    upstream.enqueue(Text("Fine."), End())
    response = await alice_client.request(
        "POST", f"/c/{conversation.pk}/send/", data={"text": "How are you?"}
    )
    await follow(alice_client, stream_path(response.text))
    assert without_breakpoints(upstream.requests[1]["body"]["messages"]) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [signed, {"type": "text", "text": "Hello there!"}]},
        {"role": "user", "content": "How are you?"},
    ]


@pytest.mark.django_db(transaction=True)
async def test_thinking_in_tool_rounds_and_redacted_thinking_are_replayed_exactly(
    alice: User, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    conversation = await _thinking_conversation(alice)
    upstream.enqueue(
        RedactedThinking("ENCRYPTED-opaque-data=="),
        Thinking("I need the calculator."),
        Signature(SIG),
        ToolUse("toolu_t", "calculator", ['{"expression": "6*7"}']),
        End(stop_reason="tool_use"),
    )
    upstream.enqueue(Text("It is 42."), End())
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "6*7?"})
    _, events = await follow(alice_client, stream_path(response.text))
    assert "encrypted" in thought(events) and "I need the calculator." in thought(events)
    first_round = [
        {"type": "redacted_thinking", "data": "ENCRYPTED-opaque-data=="},
        {"type": "thinking", "thinking": "I need the calculator.", "signature": SIG},
        {"type": "tool_use", "id": "toolu_t", "name": "calculator", "input": {"expression": "6*7"}},
    ]
    # The tool round went back with the thinking blocks first, exactly as received (the fake checks it too).
    second = upstream.requests[1]["body"]
    assert second["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert second["messages"][-2] == {"role": "assistant", "content": first_round}
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert reply is not None
    assert reply.status == Message.Status.COMPLETE, reply.error_message
    assert reply.blocks[0] == {"role": "assistant", "content": first_round}
    assert reply.content == "It is 42."
    # And on the next turn, the whole exchange again.
    upstream.enqueue(Text("Welcome."), End())
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Thanks"})
    await follow(alice_client, stream_path(response.text))
    assert without_breakpoints(upstream.requests[2]["body"]["messages"])[1:-1] == reply.blocks


@pytest.mark.django_db(transaction=True)
async def test_thinking_resumes_after_a_reconnect_without_gap_or_duplicate(
    alice: User, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    conversation = await _thinking_conversation(alice)
    gate, gate2 = threading.Event(), threading.Event()
    upstream.enqueue(
        Thinking("First thought. "),
        Wait(gate, timeout=30),
        Thinking("Second thought."),
        Signature(SIG),
        Text("Answer "),
        Wait(gate2, timeout=30),
        Text("ends."),
        End(),
    )
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Think"})
    path = stream_path(response.text)
    assert "thinking=0" in path
    stream = await alice_client.open_stream(path)
    event = await stream.next_event()
    assert (event.event, event.data, event.id) == ("thinking", "First thought. ", "0.15")
    await stream.disconnect()
    gate.set()
    # The browser's own reconnect: Last-Event-ID carries both offsets.
    stream = await alice_client.open_stream(path.split("?")[0], headers={"Last-Event-ID": event.id or ""})
    seen = [await stream.next_event()]
    while seen[-1].event != "delta":
        seen.append(await stream.next_event())
    assert thought(seen) == "Second thought." and streamed_text(seen) == "Answer "
    await stream.disconnect()
    # The extension's reconnect: app.js puts the last id in ?offset= (the stale &thinking= loses).
    last = seen[-1].id or ""
    assert last == "7.30"
    gate2.set()
    _, rest = await follow(alice_client, f"{path.split('?')[0]}?offset={last}&thinking=0")
    assert thought(rest) == "" and streamed_text(rest) == "ends."
    reply = await reload(await Message.objects.filter(conversation=conversation, role="assistant").alast())  # type: ignore[arg-type]
    assert reply.thinking == "First thought. Second thought." and reply.content == "Answer ends."


@pytest.mark.django_db(transaction=True)
async def test_live_answer_text_that_overtakes_the_sync_answer_still_follows_the_missed_thinking(
    alice: User, alice_client: AsgiClient
) -> None:
    """The order the subscriber must keep, forced rather than waited for: this test plays the producer on the
    real channel layer, and sends live answer text to the new subscriber before answering its sync (which
    carries the thinking it missed). The page still gets the thinking first, then the answer, once each.
    (Before the fix the held live text went out first: `test_thinking_resumes_after_a_reconnect...` failed
    about 1 run in 8 that way.)"""
    conversation = await sync_to_async(services.conversation_create)(user=alice)
    question = await Message.objects.acreate(conversation=conversation, role="user", content="Think")
    reply = await Message.objects.acreate(
        conversation=conversation,
        parent=question,
        role="assistant",
        status=Message.Status.STREAMING,
        lease_expires_at=lease_deadline(),
        thinking="First thought. ",
    )
    producer = await pubsub.new_channel()
    assert await pubsub.join(producer, [pubsub.control_group(reply.pk)])
    stream = await alice_client.open_stream(
        f"/c/{conversation.pk}/m/{reply.pk}/stream/", headers={"Last-Event-ID": stream_position(0, 15)}
    )
    sync = await pubsub.layer().receive(producer)  # the subscriber has joined its groups, and asks
    assert (sync["type"], sync["offset"], sync["thinking_offset"]) == (pubsub.SYNC, 0, 15)
    await pubsub.publish(pubsub.audience_group(reply.pk), pubsub.chunk(0, "Answer "))
    await pubsub.send(sync["reply_to"], pubsub.thinking(15, "Second thought."))
    await pubsub.send(sync["reply_to"], pubsub.chunk(0, "Answer "))
    await pubsub.publish(pubsub.audience_group(reply.pk), pubsub.chunk(7, "ends."))
    seen = [await stream.next_event()]
    while seen[-1].data != "ends.":
        seen.append(await stream.next_event())
    await stream.disconnect()
    assert [(e.event, html.unescape(e.data), e.id) for e in seen] == [
        ("thinking", "Second thought.", stream_position(0, 30)),
        ("delta", "Answer ", stream_position(7, 30)),
        ("delta", "ends.", stream_position(12, 30)),
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_reload_mid_thinking_shows_the_saved_thinking_and_resumes_from_it(
    alice: User, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    conversation = await _thinking_conversation(alice)
    gate = threading.Event()
    upstream.enqueue(
        Thinking("Pondering deeply. "),
        Wait(gate, timeout=30),
        Thinking("Done."),
        Signature(SIG),
        Text("Yes."),
        End(),
    )
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Well?"})
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert reply is not None

    async def saved() -> bool:
        return (await reload(reply)).thinking == "Pondering deeply. "

    from tests.support.streams import eventually

    await eventually(saved)  # the flusher saved the thinking so far
    page = await alice_client.request("GET", f"/c/{conversation.pk}/", htmx=False)
    assert '<details class="msg-thinking" open>' in page.text and "Pondering deeply. </div>" in page.text
    path = stream_path(page.text.split(f'id="msg-{reply.pk}"')[1])
    assert "?offset=0&" in path and path.endswith("&thinking=18")  # (`done=`: streaming Markdown)
    gate.set()
    _, events = await follow(alice_client, path)
    assert thought(events) == "Done." and streamed_text(events) == "Yes."
    assert response.status == 200


@pytest.mark.django_db(transaction=True)
async def test_stop_mid_thinking_keeps_the_thinking_and_saves_no_unsigned_block(
    alice: User, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    conversation = await _thinking_conversation(alice)
    gate = threading.Event()
    upstream.enqueue(Thinking("Half a thought"), Wait(gate, timeout=30), Signature(SIG), Text("x"), End())
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Go"})
    stream = await alice_client.open_stream(stream_path(response.text))
    assert (await stream.next_event()).event == "thinking"
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert reply is not None
    assert (await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/stop/")).status == 204
    events = await stream.events_until("done", timeout=10)
    gate.set()
    reply = await reload(reply)
    assert reply.status == Message.Status.STOPPED
    assert reply.thinking == "Half a thought" and reply.blocks == [] and reply.content == ""
    assert "Half a thought" in events[-1].data and "You stopped this response." in events[-1].data
    # The next turn is valid: the stopped reply had no text and is left out; nothing unsigned is sent.
    upstream.enqueue(Thinking("ok"), Signature(SIG), Text("Again."), End())
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Again"})
    _, events = await follow(alice_client, stream_path(response.text))
    assert without_breakpoints(upstream.requests[1]["body"]["messages"]) == [
        {"role": "user", "content": [{"type": "text", "text": "Go"}, {"type": "text", "text": "Again"}]}
    ]
    assert streamed_text(events) == "Again."


@pytest.mark.django_db(transaction=True)
async def test_continue_with_thinking_goes_on_without_thinking_and_keeps_the_signed_block(
    alice: User, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    conversation = await _thinking_conversation(alice)
    upstream.enqueue(
        Thinking("Plan the list."), Signature(SIG), Text("One, two,"), End(stop_reason="max_tokens")
    )
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Count"})
    await follow(alice_client, stream_path(response.text))
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert reply is not None and reply.status == Message.Status.INCOMPLETE
    signed = {"type": "thinking", "thinking": "Plan the list.", "signature": SIG}
    assert reply.blocks == [{"role": "assistant", "content": [signed, {"type": "text", "text": "One, two,"}]}]

    upstream.enqueue(Text(" three."), End())
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/continue/")
    assert response.status == 200
    await follow(alice_client, stream_path(response.text))
    body = upstream.requests[1]["body"]
    # The API refuses a prefill with thinking on: the continuation is sent without thinking, and the
    # prefill is the text only.
    assert "thinking" not in body
    assert without_breakpoints(body["messages"])[-1] == {"role": "assistant", "content": "One, two,"}
    reply = await reload(reply)
    assert reply.status == Message.Status.COMPLETE and reply.content == "One, two, three."
    assert reply.thinking == "Plan the list."
    assert reply.blocks == [
        {"role": "assistant", "content": [signed, {"type": "text", "text": "One, two, three."}]}
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_reply_cut_off_after_thinking_but_before_text_leaves_the_history_valid(
    alice: User, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    conversation = await _thinking_conversation(alice)
    upstream.enqueue(Thinking("A long plan"), Signature(SIG), End(stop_reason="max_tokens"))
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Plan"})
    _, events = await follow(alice_client, stream_path(response.text))
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert reply is not None and reply.status == Message.Status.INCOMPLETE
    assert reply.thinking == "A long plan" and reply.content == "" and reply.blocks == []
    assert "maximum length" in events[-1].data and "Continue" not in events[-1].data  # nothing to continue
    upstream.enqueue(Thinking("ok"), Signature(SIG), Text("Short plan."), End())
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Shorter"})
    await follow(alice_client, stream_path(response.text))
    # The thought-only reply is not replayed (the fake would refuse nothing here, but an assistant turn of
    # thinking alone is no answer); the two user turns merge into one.
    assert without_breakpoints(upstream.requests[1]["body"]["messages"]) == [
        {"role": "user", "content": [{"type": "text", "text": "Plan"}, {"type": "text", "text": "Shorter"}]}
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_fault_mid_thinking_is_reported_like_one_mid_text(
    alice: User, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    conversation = await _thinking_conversation(alice)
    upstream.enqueue(Thinking("Hmm"), ErrorEvent())
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Q"})
    _, events = await follow(alice_client, stream_path(response.text))
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert reply is not None and reply.status == Message.Status.ERROR and reply.thinking == "Hmm"
    assert "overloaded" in reply.error_message and "Retry" in events[-1].data


@pytest.mark.django_db
def test_thinking_budget_setting_is_validated(alice: User, settings: Any) -> None:
    from django.core.exceptions import ValidationError

    conversation = services.conversation_create(user=alice)
    with pytest.raises(ValidationError):
        services.conversation_update(conversation=conversation, thinking_budget=999)
    settings.CHAT_MAX_OUTPUT_TOKENS = settings.CHAT_MAX_TOKENS + 2000
    with pytest.raises(ValidationError, match="does not fit"):
        services.conversation_update(conversation=conversation, thinking_budget=4096)
    services.conversation_update(conversation=conversation, thinking_budget=1024)
    conversation.refresh_from_db()
    assert conversation.thinking_budget == 1024
    # Valid for the chosen model: a model with a smaller output limit cannot take the budget.
    settings.CHAT_MODEL_MAX_OUTPUT_TOKENS = {"claude-haiku-5-5": settings.CHAT_MAX_TOKENS + 1000}
    with pytest.raises(ValidationError, match="claude-haiku-5-5's output limit"):
        services.conversation_update(conversation=conversation, model="claude-haiku-5-5")
    with pytest.raises(ValidationError, match="claude-haiku-5-5's output limit"):
        services.conversation_update(
            conversation=conversation, model="claude-haiku-5-5", thinking_budget=1024
        )
    services.conversation_update(conversation=conversation, model="claude-haiku-5-5", thinking_budget=None)
    services.conversation_update(conversation=conversation, thinking_budget=None)
    conversation.refresh_from_db()
    assert conversation.thinking_budget is None


@pytest.mark.django_db
def test_the_settings_panel_turns_thinking_on_and_off(client: Any, alice: User) -> None:
    conversation = services.conversation_create(user=alice, title="T")
    client.force_login(alice)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert 'name="thinking_budget"' in page and "budget 1,024 tokens" in page
    response = client.post(f"/c/{conversation.pk}/settings/", {"title": "T", "thinking_budget": "4096"})
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.thinking_budget == 4096
    client.post(f"/c/{conversation.pk}/settings/", {"title": "T", "thinking_budget": "0"})
    conversation.refresh_from_db()
    assert conversation.thinking_budget is None
