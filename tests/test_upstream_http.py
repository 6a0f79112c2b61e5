"""CHAT_UPSTREAM_HTTP: which of the SDK's HTTP transports carries the upstream stream.

The fault tests (tests/test_faults.py) run every upstream fault under both transports; these check the
wiring itself, so that those runs really are two different transports, and that a wrong value is refused
where it is set. And, on both, the provider's `on_sending`: when a request leaves, which is when the start
view may render its answer without delaying the request (chat.streaming.producer `_sending`)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from chat.models import Message
from chat.providers import ReplyRequest, TextDelta
from chat.providers.anthropic_provider import TRANSPORTS, AnthropicProvider, _client
from tests.support.asgi_client import AsgiClient
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Unanswered
from tests.support.settings_process import settings_value
from tests.support.streams import eventually, follow, start_conversation


async def test_each_setting_builds_the_sdk_client_on_its_own_transport() -> None:
    config = ("key", "http://127.0.0.1:9", 0, 1.0, 1.0)
    # The SDK keeps its httpx2 client as `_client`; its transport is what actually speaks HTTP.
    aiohttp_client = _client(*config, "aiohttp")._client
    httpx_client = _client(*config, "httpx")._client
    assert type(aiohttp_client._transport).__name__ == "AiohttpTransport"
    assert type(httpx_client._transport).__name__ == "AsyncHTTPTransport"
    assert _client(*config, "aiohttp")._client is aiohttp_client  # one pool per loop and configuration


def test_an_unknown_transport_is_refused_by_the_provider() -> None:
    with pytest.raises(ValueError, match="aiohttp or httpx"):
        AnthropicProvider(
            api_key="k", base_url="", max_retries=0, connect_timeout=1, read_timeout=1, transport="curl"
        )


def test_the_setting_defaults_to_aiohttp_and_refuses_anything_else_at_start_up() -> None:
    unset = ("DEBUG", "SECRET_KEY", "CHAT_UPSTREAM_HTTP")
    assert settings_value({"DEBUG": "True"}, "CHAT_UPSTREAM_HTTP", unset=unset) == "aiohttp"
    with pytest.raises(AssertionError, match="CHAT_UPSTREAM_HTTP must be aiohttp or httpx, not 'curl'"):
        settings_value({"DEBUG": "True", "CHAT_UPSTREAM_HTTP": "curl"}, "CHAT_UPSTREAM_HTTP", unset=unset)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_on_sending_comes_once_the_request_is_built_before_the_upstream_has_it(
    transport: str, upstream: FakeAnthropic
) -> None:
    gate = threading.Event()
    upstream.enqueue(Unanswered(gate), Text("Hi"), End())
    provider = AnthropicProvider(
        api_key="k",
        base_url=upstream.url,
        max_retries=0,
        connect_timeout=5,
        read_timeout=5,
        transport=transport,
    )
    upstream_had: list[int] = []  # how many requests the upstream had when `on_sending` was called
    request = ReplyRequest(
        model="claude-test",
        system="",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=50,
        on_sending=lambda: upstream_had.append(upstream.request_count),
    )
    events = provider.stream(request)
    first = asyncio.ensure_future(anext(events))
    await eventually(lambda: upstream.request_count == 1)
    # Called once, before the request was written; the provider now waits for the upstream's answer.
    assert upstream_had == [0] and not first.done()
    gate.set()
    items = [await first] + [item async for item in events]
    assert "".join(item.text for item in items if isinstance(item, TextDelta)) == "Hi"
    assert upstream_had == [0]


@pytest.mark.django_db(transaction=True)
async def test_the_start_answers_before_the_upstream_does_and_the_reply_streams_once_it_does(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    """The start's page waits for its request to leave, not for the model: an upstream that holds its
    answer does not hold the page (the grace in `_sending`), and the reply streams once it answers."""
    gate = threading.Event()
    upstream.enqueue(Unanswered(gate, timeout=30), Text("Here."), End())
    _, reply, path = await start_conversation(alice_client, "Hello?")
    await eventually(lambda: upstream.request_count == 1)
    assert (await Message.objects.aget(pk=reply.pk)).status == Message.Status.STREAMING
    gate.set()
    _, events = await follow(alice_client, path)
    assert "".join(event.data for event in events if event.event == "delta") == "Here."
