"""Self-tests of tests.support.fake_anthropic against the real anthropic SDK (2.x, HTTP layer httpx2)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam, TextBlock, ToolUseBlock

from tests.support.fake_anthropic import (
    Drop,
    End,
    ErrorEvent,
    FakeAnthropic,
    HTTPError,
    Ping,
    Sleep,
    Stall,
    Text,
    ToolUse,
    Wait,
)

MODEL = "claude-test-model"
MESSAGES: list[MessageParam] = [{"role": "user", "content": "Say hello"}]
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def sdk(fake: FakeAnthropic, **kwargs: Any) -> AsyncIterator[anthropic.AsyncAnthropic]:
    options: dict[str, Any] = {"api_key": "test", "base_url": fake.url, "max_retries": 0, **kwargs}
    async with anthropic.AsyncAnthropic(**options) as client:
        yield client


def stream(client: anthropic.AsyncAnthropic, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": MESSAGES, **kwargs}
    return client.messages.stream(**options)


async def eventually(predicate: Any, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# ------------------------------------------------------------------------------------------------ happy paths


@pytest.mark.asyncio
async def test_default_script_streams_text_stop_reason_and_usage(fake: FakeAnthropic) -> None:
    async with sdk(fake) as client:
        async with stream(client) as s:
            chunks = [text async for text in s.text_stream]
            final = await s.get_final_message()
    assert chunks == ["Hello", " from", " the fake."]
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    assert final.id.startswith("msg_")
    assert final.usage.input_tokens == 12
    assert final.usage.output_tokens == 3
    assert [block.type for block in final.content] == ["text"]
    assert isinstance(final.content[0], TextBlock)
    assert final.content[0].text == "Hello from the fake."
    assert [text for text, _ in fake.sent] == chunks
    assert fake.client_disconnects == 0
    assert not fake.connections_closed.is_set()


@pytest.mark.asyncio
async def test_scripted_stream_with_pings_and_explicit_usage(fake: FakeAnthropic) -> None:
    fake.enqueue(Ping(), Text("a"), Ping(), Sleep(0.01), Text("b"), Stall(0.01), End("max_tokens", 7, 99))
    async with sdk(fake) as client:
        async with stream(client) as s:
            event_types = [event.type async for event in s]
            final = await s.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "ab"
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (99, 7)
    assert event_types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "text",
        "content_block_delta",
        "text",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


@pytest.mark.asyncio
async def test_text_is_delivered_byte_exact(fake: FakeAnthropic) -> None:
    hostile = 'evil\n\nevent: done\ndata: <img src=x>\r\nid: 9\r: c\rretry: 1\n"quoted" \\ é 😀\u2028'
    fake.enqueue(Text(hostile), Text(""), End())
    async with sdk(fake) as client:
        async with stream(client) as s:
            chunks = [text async for text in s.text_stream]
    assert chunks == [hostile, ""]
    assert fake.sent[0][0] == hostile


@pytest.mark.asyncio
async def test_request_is_recorded(fake: FakeAnthropic) -> None:
    async with sdk(fake) as client:
        async with stream(client, system="Be brief.") as s:
            await s.get_final_message()
    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request["path"] == "/v1/messages"
    assert request["body"]["model"] == MODEL
    assert request["body"]["messages"] == MESSAGES
    assert request["body"]["system"] == "Be brief."
    assert request["body"]["stream"] is True
    assert request["body"]["max_tokens"] == 64
    assert request["headers"]["authorization"] == "Bearer test"
    assert "anthropic-version" in request["headers"]
    assert all(key == key.lower() for key in request["headers"])


@pytest.mark.asyncio
async def test_scripts_are_fifo_then_default(fake: FakeAnthropic) -> None:
    fake.enqueue(Text("first"), End())
    fake.enqueue(Text("second"), End())
    fake.default_script = [Text("default"), End()]
    async with sdk(fake) as client:
        texts = []
        for _ in range(3):
            async with stream(client) as s:
                texts.append(await s.get_final_text())
    assert texts == ["first", "second", "default"]
    fake.enqueue(Text("queued"), End())
    fake.reset()
    assert fake.requests == [] and fake.sent == [] and fake.client_disconnects == 0
    async with sdk(fake) as client:
        async with stream(client) as s:
            assert await s.get_final_text() == "Hello from the fake."  # queue and default_script reset


def test_http_error_must_be_first_step(fake: FakeAnthropic) -> None:
    with pytest.raises(ValueError):
        fake.enqueue(Text("x"), HTTPError(500, "api_error", "boom"))
    with pytest.raises(TypeError):
        fake.enqueue("not a step")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_missing_end_gives_stop_reason_none(fake: FakeAnthropic) -> None:
    fake.enqueue(Text("partial"), Text(" answer"))
    async with sdk(fake) as client:
        async with stream(client) as s:
            chunks = [text async for text in s.text_stream]
            final = await s.get_final_message()
    assert chunks == ["partial", " answer"]
    assert final.stop_reason is None
    assert final.content[0].type == "text" and final.content[0].text == "partial answer"


@pytest.mark.asyncio
async def test_tool_use_block_has_parsed_input(fake: FakeAnthropic) -> None:
    fake.enqueue(
        Text("Let me check."),
        ToolUse("toolu_01", "get_weather", ['{"city": "Pa', 'ris", "days": ', "3}"]),
        End("tool_use"),
    )
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]
    async with sdk(fake) as client:
        async with stream(client, tools=tools) as s:
            final = await s.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    tool_block = final.content[1]
    assert isinstance(tool_block, ToolUseBlock)
    assert (tool_block.id, tool_block.name) == ("toolu_01", "get_weather")
    assert tool_block.input == {"city": "Paris", "days": 3}
    assert fake.requests[0]["body"]["tools"] == tools


@pytest.mark.asyncio
async def test_non_stream_request_gets_json_message(fake: FakeAnthropic) -> None:
    fake.enqueue(Text("Hi"), Text(" there"), ToolUse("toolu_9", "lookup", ['{"q":', '"x"}']), End("tool_use"))
    async with sdk(fake) as client:
        message = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert message.model == MODEL
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "text" and message.content[0].text == "Hi there"
    assert isinstance(message.content[1], ToolUseBlock) and message.content[1].input == {"q": "x"}
    assert message.usage.output_tokens == 2
    assert "stream" not in fake.requests[0]["body"] or fake.requests[0]["body"]["stream"] is False


@pytest.mark.asyncio
async def test_non_stream_error_event_and_drop(fake: FakeAnthropic) -> None:
    fake.enqueue(Text("a"), ErrorEvent("overloaded_error", "Overloaded"))
    fake.enqueue(Text("a"), Drop())
    async with sdk(fake) as client:
        with pytest.raises(anthropic.OverloadedError) as info:
            await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
        assert info.value.status_code == 529
        with pytest.raises(anthropic.APIConnectionError) as conn_info:
            await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
        assert isinstance(conn_info.value.__cause__, httpx2.RemoteProtocolError)


# ------------------------------------------------------------------------------------------------ causality


@pytest.mark.asyncio
async def test_wait_proves_client_saw_first_token_before_second_was_sent(fake: FakeAnthropic) -> None:
    go = threading.Event()
    fake.enqueue(Text("one"), Wait(go, timeout=30), Text("two"), End())
    received: list[str] = []
    async with sdk(fake) as client:
        async with stream(client) as s:
            async for text in s.text_stream:
                received.append(text)
                if text == "one":
                    # The upstream has sent exactly one token and is blocked until we say so.
                    assert [sent for sent, _ in fake.sent] == ["one"]
                    released_at = time.time()
                    go.set()
    assert received == ["one", "two"]
    assert [sent for sent, _ in fake.sent] == ["one", "two"]
    assert fake.sent[1][1] >= released_at


# ------------------------------------------------------------------------------------------------ failures


@pytest.mark.asyncio
async def test_error_event_raises_api_status_error_after_first_text(fake: FakeAnthropic) -> None:
    fake.enqueue(Text("partial"), ErrorEvent("overloaded_error", "Overloaded"), Text("never"), End())
    received: list[str] = []
    async with sdk(fake) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with stream(client) as s:
                async for text in s.text_stream:
                    received.append(text)
    assert received == ["partial"]
    # Mid-stream errors are the plain base class (not OverloadedError) and carry the 200 of the stream.
    assert type(info.value) is anthropic.APIStatusError
    assert info.value.status_code == 200
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert [text for text, _ in fake.sent] == ["partial"]


@pytest.mark.asyncio
async def test_drop_raises_remote_protocol_error_after_partial_text(fake: FakeAnthropic) -> None:
    fake.enqueue(Text("partial"), Drop(), Text("never"), End())
    received: list[str] = []
    async with sdk(fake) as client:
        with pytest.raises(httpx2.RemoteProtocolError):  # unwrapped: not an anthropic.APIConnectionError
            async with stream(client) as s:
                async for text in s.text_stream:
                    received.append(text)
    assert received == ["partial"]
    assert fake.client_disconnects == 0  # the server hung up, not the client


@pytest.mark.asyncio
async def test_stall_past_read_timeout_raises_read_timeout(fake: FakeAnthropic) -> None:
    fake.enqueue(Text("partial"), Stall(30), Text("never"), End())
    received: list[str] = []
    async with sdk(fake, timeout=anthropic.Timeout(10, read=0.5)) as client:
        with pytest.raises(httpx2.ReadTimeout):  # unwrapped: not an anthropic.APITimeoutError
            async with stream(client) as s:
                async for text in s.text_stream:
                    received.append(text)
    assert received == ["partial"]
    # The client gave up and closed the connection: the fake sees it as a disconnect and stops the script.
    assert await eventually(lambda: fake.client_disconnects == 1)
    assert [text for text, _ in fake.sent] == ["partial"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "error_type", "exc_class"),
    [
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (529, "overloaded_error", anthropic.OverloadedError),
        (500, "api_error", anthropic.InternalServerError),
    ],
)
async def test_http_error_raises_sdk_error_without_retrying(
    fake: FakeAnthropic, status: int, error_type: str, exc_class: type[anthropic.APIStatusError]
) -> None:
    fake.enqueue(HTTPError(status, error_type, f"{error_type} happened"))
    # Default max_retries (2): `x-should-retry: false` must stop the SDK from retrying.
    async with sdk(fake, max_retries=2) as client:
        with pytest.raises(exc_class) as info:
            async with stream(client) as s:
                await s.get_final_message()
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"] == {"type": error_type, "message": f"{error_type} happened"}
    assert info.value.request_id is not None
    assert len(fake.requests) == 1


@pytest.mark.asyncio
async def test_http_error_with_retry_after_is_retried(fake: FakeAnthropic) -> None:
    fake.enqueue(HTTPError(429, "rate_limit_error", "slow down", retry_after=0.05))
    fake.enqueue(Text("ok"), End())
    async with sdk(fake, max_retries=1) as client:
        async with stream(client) as s:
            assert await s.get_final_text() == "ok"
    assert len(fake.requests) == 2
    assert fake.requests[1]["headers"]["x-stainless-retry-count"] == "1"


# ------------------------------------------------------------------------------------------------ disconnects


@pytest.mark.asyncio
async def test_client_leaving_stream_early_is_counted_while_upstream_waits(fake: FakeAnthropic) -> None:
    never = threading.Event()
    fake.enqueue(Text("first"), Wait(never, timeout=30), Text("never"), End())
    async with sdk(fake) as client:
        async with stream(client) as s:
            async for text in s.text_stream:
                assert text == "first"
                break
        assert await eventually(lambda: fake.client_disconnects == 1)
    assert fake.connections_closed.is_set()
    assert [text for text, _ in fake.sent] == ["first"]


@pytest.mark.asyncio
async def test_client_leaving_stream_early_is_counted_while_upstream_writes(fake: FakeAnthropic) -> None:
    steps = [step for i in range(2000) for step in (Text(f"t{i} "), Sleep(0.005))]
    fake.enqueue(*steps, End())
    async with sdk(fake) as client:
        async with stream(client) as s:
            async for _ in s.text_stream:
                break
        assert await eventually(lambda: fake.client_disconnects == 1)
    sent_after_disconnect = len(fake.sent)
    await asyncio.sleep(0.1)
    assert len(fake.sent) == sent_after_disconnect < 2000  # the script stopped
    assert fake.wait_for_disconnects(1, timeout=0)


@pytest.mark.asyncio
async def test_completed_streams_on_a_reused_connection_are_not_disconnects(fake: FakeAnthropic) -> None:
    async with sdk(fake) as client:
        for _ in range(3):
            async with stream(client) as s:
                await s.get_final_message()
    await asyncio.sleep(0.1)
    assert fake.client_disconnects == 0


@pytest.mark.asyncio
async def test_reset_cancels_streams_still_in_flight(fake: FakeAnthropic) -> None:
    never = threading.Event()
    fake.enqueue(Text("stale"), Wait(never, timeout=30), Text("never"), End())
    async with sdk(fake, timeout=anthropic.Timeout(10, read=10)) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            async with stream(client) as s:
                async for text in s.text_stream:
                    assert text == "stale"
                    fake.reset()  # e.g. a session-wide fake between tests
        assert fake.sent == [] and fake.requests == []
        assert fake.client_disconnects == 0 and not fake.connections_closed.is_set()
        async with stream(client) as s:
            assert await s.get_final_text() == "Hello from the fake."
    assert [text for text, _ in fake.sent] == ["Hello", " from", " the fake."]
