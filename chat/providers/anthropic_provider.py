"""Claude through the official SDK: `AsyncAnthropic().messages.stream`."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import anthropic
import httpx2

from chat.errors import ReplyFailure
from chat.providers.base import (
    Finished,
    ReplyRequest,
    Started,
    StreamEvent,
    TextDelta,
    ToolCallReady,
    ToolCallStarted,
)

_ClientKey = tuple[str, str, int, float, float]
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, anthropic.AsyncAnthropic]] = (
    weakref.WeakKeyDictionary()
)


def _client(
    api_key: str, base_url: str, max_retries: int, connect: float, read: float
) -> anthropic.AsyncAnthropic:
    # One client (one connection pool, reused across replies) per event loop and configuration: a pool's
    # connections belong to the loop that opened them.
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (api_key, base_url, max_retries, connect, read)
    if key not in per_loop:
        per_loop[key] = anthropic.AsyncAnthropic(
            api_key=api_key or None,
            base_url=base_url or None,
            max_retries=max_retries,
            timeout=anthropic.Timeout(read, connect=connect),
        )
    return per_loop[key]


class AnthropicProvider:
    name = "anthropic"
    is_demo = False

    def __init__(
        self, *, api_key: str, base_url: str, max_retries: int, connect_timeout: float, read_timeout: float
    ) -> None:
        self.read_timeout = read_timeout
        self.config = (api_key, base_url, max_retries, connect_timeout, read_timeout)

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[StreamEvent, None]:
        try:
            # Leaving this block (normally, by exception, or by cancellation) closes the HTTP stream.
            async with _client(*self.config).messages.stream(
                model=request.model,
                max_tokens=request.max_tokens,
                system=request.system or anthropic.omit,
                messages=request.messages,  # type: ignore[arg-type]
                tools=request.tools or anthropic.omit,  # type: ignore[arg-type]
                tool_choice={"type": "none"} if request.tools and not request.allow_tools else anthropic.omit,
            ) as stream:
                async for event in stream:
                    if event.type == "text" and event.text:
                        yield TextDelta(event.text)
                    elif event.type == "message_start":
                        yield Started(
                            model=event.message.model, input_tokens=event.message.usage.input_tokens
                        )
                    elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                        yield ToolCallStarted(id=event.content_block.id, name=event.content_block.name)
                    elif event.type == "content_block_stop" and event.content_block.type == "tool_use":
                        block = event.content_block
                        arguments = block.input if isinstance(block.input, dict) else {}
                        yield ToolCallReady(id=block.id, name=block.name, input=arguments)
                final = await stream.get_final_message()
        except anthropic.APIStatusError as exc:
            raise map_status_error(exc) from exc
        except anthropic.APITimeoutError as exc:
            raise ReplyFailure("timeout", "The model provider did not answer in time.") from exc
        except anthropic.APIConnectionError as exc:
            raise ReplyFailure("connection", "Could not connect to the model provider.") from exc
        except httpx2.ReadTimeout as exc:
            raise ReplyFailure(
                "stalled",
                f"The model sent nothing for {self.read_timeout:g} seconds, so the response was cut off.",
            ) from exc
        except httpx2.TransportError as exc:
            raise ReplyFailure(
                "dropped", "The connection to the model dropped in the middle of the response."
            ) from exc
        yield Finished(
            stop_reason=final.stop_reason,
            model=final.model,
            input_tokens=final.usage.input_tokens,
            output_tokens=final.usage.output_tokens,
            content=[_api_block(block) for block in final.content if block.type in ("text", "tool_use")],
        )


def _api_block(block: Any) -> dict[str, Any]:
    """A response content block as a request content block (only the fields the API accepts back)."""
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    return {"type": "text", "text": block.text}


def map_status_error(exc: anthropic.APIStatusError) -> ReplyFailure:
    status = exc.status_code
    if status == 200:  # an `event: error` frame in the middle of the stream
        kind, detail = _error_body(exc)
        if kind == "overloaded_error":
            return ReplyFailure("overloaded", "The model became overloaded in the middle of the response.")
        return ReplyFailure("stream_error", f"The model provider reported an error mid-response: {detail}")
    if status in (401, 403):
        return ReplyFailure(
            "configuration",
            "The model provider refused the credentials (HTTP "
            f"{status}). This is a server configuration problem: the site's administrator needs to check "
            "ANTHROPIC_API_KEY.",
            retryable=False,
        )
    if status == 404:
        return ReplyFailure(
            "configuration", "The model provider does not know the configured model.", retryable=False
        )
    if status == 429:
        return ReplyFailure(
            "rate_limited", "Too many requests reached the model provider. Wait a moment and retry."
        )
    if status == 529 or isinstance(exc, anthropic.OverloadedError):
        return ReplyFailure("overloaded", "The model is overloaded right now. Try again in a moment.")
    if status >= 500:
        return ReplyFailure("upstream_error", f"The model provider had an internal error (HTTP {status}).")
    _, detail = _error_body(exc)
    return ReplyFailure("rejected", f"The model provider rejected the request (HTTP {status}): {detail}")


def _error_body(exc: anthropic.APIStatusError) -> tuple[str, str]:
    body = exc.body
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return "", body[:200]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("type", "")), str(error.get("message", ""))[:200]
    return "", str(exc)[:200]
