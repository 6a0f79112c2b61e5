"""Tool use while streaming: the registry's tools, the rounds, and what is saved and replayed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation, Message
from chat.tools import ToolContext, ToolError
from chat.tools.calculator import evaluate
from chat.tools.registry import Tool, register
from chat.tools.runner import run_tool_call
from tests.support.asgi_client import AsgiClient, stream_path
from tests.support.caching import without_breakpoints
from tests.support.fake_anthropic import End, FakeAnthropic, Text, ToolUse, Wait
from tests.support.streams import follow, reload, start_conversation, streamed_text
from tests.support.waiting import until

CTX = ToolContext(user_id=0, conversation_id=0)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2+2", 4),
        ("(17.5 * 3) / 4", 13.125),
        ("2^10", 1024),
        ("-3 ** 2", -9),
        ("sqrt(16) + abs(-2)", 6.0),
        ("7 // 2 + 7 % 2", 4),
        ("round(pi, 2)", 3.14),
    ],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("__import__('os').system('true')", "Unsupported"),
        ("open('/etc/passwd')", "Unsupported"),
        ("(1).__class__", "Unsupported"),
        ("10 ** 10 ** 10", "Exponents above"),
        ("1/0", "Division by zero"),
        ("2 +", "Not an arithmetic expression"),
        ("x" * 600, "longer than"),
    ],
)
def test_calculator_refuses_anything_else(expression: str, words: str) -> None:
    with pytest.raises(ToolError, match=words):
        evaluate(expression)


async def test_clock_tool_uses_the_named_zone_and_explains_bad_ones() -> None:
    good = await run_tool_call(
        tool_use_id="t", name="current_time", arguments={"timezone": "Asia/Tokyo"}, context=CTX, timeout=5
    )
    assert not good.is_error and json.loads(good.content)["iso"].endswith("+09:00")
    bad = await run_tool_call(
        tool_use_id="t", name="current_time", arguments={"timezone": "Mars/Olympus"}, context=CTX, timeout=5
    )
    assert bad.is_error and "Unknown time zone" in bad.content


@pytest.mark.django_db(transaction=True)
async def test_search_tool_only_sees_the_callers_conversations(make_user: Any) -> None:
    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    for user, text in ((alice, "my cat is called Pixel"), (bob, "bob's cat is called Secret")):
        conversation = await Conversation.objects.acreate(user=user, title="Pets")
        await Message.objects.acreate(conversation=conversation, role="user", content=text)
    result = await run_tool_call(
        tool_use_id="t",
        name="search_conversations",
        arguments={"query": "cat"},
        context=ToolContext(user_id=alice.pk, conversation_id=0),
        timeout=5,
    )
    assert "Pixel" in result.content and "Secret" not in result.content


_slow_running = threading.Event()  # set once `_slow` has started (cleared by the fixture)


async def _slow(context: ToolContext, arguments: dict[str, Any]) -> str:
    _slow_running.set()
    await asyncio.sleep(float(arguments.get("seconds", 5)))
    return "slept"


@pytest.fixture
def slow_tool(settings: Any) -> Iterator[threading.Event]:
    """The `slow` tool registered and allowed; the event is set once a call of it has started."""
    _slow_running.clear()
    register(
        Tool(
            name="slow",
            label="the slow tool",
            description="Sleeps.",
            run=_slow,
            input_schema={"type": "object", "properties": {"seconds": {"type": "number"}}},
        )
    )
    settings.CHAT_TOOLS = [*settings.CHAT_TOOLS, "slow"]
    yield _slow_running


async def test_tool_timeout_is_an_error_result(slow_tool: threading.Event) -> None:
    result = await run_tool_call(
        tool_use_id="t", name="slow", arguments={"seconds": 5}, context=CTX, timeout=0.1
    )
    assert result.is_error and "did not finish within 0.1 seconds" in result.content


async def test_unknown_tool_is_an_error_result() -> None:
    result = await run_tool_call(tool_use_id="t", name="rm_rf", arguments={}, context=CTX, timeout=1)
    assert result.is_error and "no tool named" in result.content


def calculator_call(tool_id: str = "toolu_1", expression: str = "2+2") -> ToolUse:
    return ToolUse(tool_id, "calculator", ['{"expres', f'sion": "{expression}"', "}"])


@pytest.mark.django_db(transaction=True)
async def test_tool_round_streams_into_the_same_message_and_history_stays_valid(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    gate = threading.Event()
    upstream.enqueue(
        Text("Let me compute."),
        Wait(gate, timeout=30),
        calculator_call(),
        End(stop_reason="tool_use", output_tokens=7),
    )
    upstream.enqueue(Text("It is 4."), End(output_tokens=4, input_tokens=30))
    conversation, reply, path = await start_conversation(alice_client, "What is 2+2?")
    stream = await alice_client.open_stream(path)
    events = [await stream.next_event()]
    gate.set()  # the viewer is watching live before the tool call starts
    events += await stream.events_until("done")
    await stream.drain()
    tools = [e.data for e in events if e.event == "tool"]
    assert "Using calculator…" in tools[0]
    assert "2+2" in tools[1] and tools[1].count('id="tool-toolu_1"') == 1
    assert "Used calculator" in tools[-1] and "2+2 = 4" in tools[-1]
    # Text, then the tool, then text again — all in one assistant message.
    assert [e.event for e in events].index("tool") > 0
    reply = await reload(reply)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == streamed_text(events) == "Let me compute.\n\nIt is 4."
    assert reply.input_tokens == 12 + 30 and reply.output_tokens == 7 + 4  # summed across rounds

    # The follow-up request carried the matching tool_result.
    follow_up = {**upstream.requests[1]["body"]}
    follow_up["messages"] = without_breakpoints(follow_up["messages"])
    # The round replayed exactly: its text (filled from the reply's text, see `fill_streamed_text`), then
    # its tool call.
    assert follow_up["messages"][-2] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me compute."},
            {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "2+2"}},
        ],
    }
    assert follow_up["messages"][-1] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "2+2 = 4", "is_error": False}
        ],
    }
    assert {t["name"] for t in follow_up["tools"]} == {"calculator", "current_time", "search_conversations"}

    # Saved as content blocks, in order, and replayed exactly on the next turn.
    assert [turn["role"] for turn in reply.blocks] == ["assistant", "user", "assistant"]
    upstream.enqueue(Text("Sure."), End())
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "Thanks"})
    assert response.status == 200
    await follow(alice_client, stream_path(response.text))
    history = without_breakpoints(upstream.requests[2]["body"]["messages"])
    assert history[0] == {"role": "user", "content": "What is 2+2?"}
    assert history[1:4] == reply.blocks
    assert history[4] == {"role": "user", "content": "Thanks"}

    # The transcript shows the call and its result.
    page = await alice_client.request("GET", f"/c/{conversation.pk}/", htmx=False)
    assert "Used calculator" in page.text and "2+2 = 4" in page.text


@pytest.mark.django_db(transaction=True)
async def test_tool_error_is_sent_back_with_is_error(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(calculator_call(expression="1/0"), End(stop_reason="tool_use"))
    upstream.enqueue(Text("Division by zero is undefined."), End())
    _, reply, path = await start_conversation(alice_client)
    _, events = await follow(alice_client, path)
    result = upstream.requests[1]["body"]["messages"][-1]["content"][0]
    assert result["is_error"] is True and result["content"] == "Division by zero."
    assert "Calculator failed" in events[-1].data and "Division by zero." in events[-1].data
    assert (await reload(reply)).status == Message.Status.COMPLETE


@pytest.mark.django_db(transaction=True)
async def test_tool_round_cap(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_MAX_TOOL_ROUNDS = 1
    upstream.enqueue(calculator_call("toolu_a", "1+1"), End(stop_reason="tool_use"))
    upstream.enqueue(Text("Answer without tools."), End())
    _, reply, path = await start_conversation(alice_client)
    _, events = await follow(alice_client, path)
    assert "tool_choice" not in upstream.requests[0]["body"]
    assert upstream.requests[1]["body"]["tool_choice"] == {"type": "none"}
    reply = await reload(reply)
    assert "limit of 1 tool rounds" in reply.note and "limit of 1 tool rounds" in events[-1].data


@pytest.mark.django_db(transaction=True)
async def test_stop_during_a_tool_call_keeps_partial_and_a_valid_history(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, slow_tool: threading.Event
) -> None:
    upstream.enqueue(
        Text("Working on it."), ToolUse("toolu_s", "slow", ['{"seconds": 30}']), End(stop_reason="tool_use")
    )
    conversation, reply, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    while True:  # until the box shows the arguments
        event = await stream.next_event()
        if event.event == "tool" and "tool-input" in event.data:
            break
    # The box shows the arguments as soon as the tool_use block is complete, before the round ends and the
    # tool runs: a stop in between cancels the round, with no tool call to record (seen once under a loaded
    # CI run). This test is about a stop while the tool runs.
    await until(slow_tool.is_set, "the slow tool running")
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/stop/")
    assert response.status == 204
    events = await stream.events_until("done", timeout=5)
    reply = await reload(reply)
    assert reply.status == Message.Status.STOPPED and reply.content == "Working on it."
    assert reply.blocks[-1] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_s",
                "content": "The reply ended before this tool finished.",
                "is_error": True,
            }
        ],
    }
    assert "You stopped this response." in events[-1].data
