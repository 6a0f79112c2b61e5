"""Provider selection: Anthropic when a key is configured, the labelled demo otherwise."""

from __future__ import annotations

from django.conf import settings

from chat.providers.anthropic_provider import AnthropicProvider
from chat.providers.base import (
    STREAMED_TEXT,
    Finished,
    Provider,
    ReplyRequest,
    Started,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallReady,
    ToolCallStarted,
    fill_streamed_text,
)
from chat.providers.demo import DemoProvider

__all__ = [
    "STREAMED_TEXT",
    "Finished",
    "Provider",
    "ReplyRequest",
    "Started",
    "StreamEvent",
    "TextDelta",
    "ThinkingDelta",
    "ToolCallReady",
    "ToolCallStarted",
    "fill_streamed_text",
    "get_provider",
    "is_demo_mode",
]


def is_demo_mode() -> bool:
    choice = settings.CHAT_PROVIDER or ("anthropic" if settings.ANTHROPIC_API_KEY else "demo")
    return choice == "demo"


def get_provider() -> Provider:
    if is_demo_mode():
        return DemoProvider(token_delay=settings.CHAT_DEMO_TOKEN_DELAY)
    return AnthropicProvider(
        api_key=settings.ANTHROPIC_API_KEY,
        base_url=settings.ANTHROPIC_BASE_URL,
        max_retries=settings.CHAT_UPSTREAM_MAX_RETRIES,
        connect_timeout=settings.CHAT_UPSTREAM_CONNECT_TIMEOUT,
        read_timeout=settings.CHAT_UPSTREAM_READ_TIMEOUT,
        transport=settings.CHAT_UPSTREAM_HTTP,
    )
