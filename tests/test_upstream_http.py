"""CHAT_UPSTREAM_HTTP: which of the SDK's HTTP transports carries the upstream stream.

The fault tests (tests/test_faults.py) run every upstream fault under both transports; these check the
wiring itself, so that those runs really are two different transports, and that a wrong value is refused
where it is set."""

from __future__ import annotations

import pytest

from chat.providers.anthropic_provider import AnthropicProvider, _client
from tests.support.settings_process import settings_value


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
