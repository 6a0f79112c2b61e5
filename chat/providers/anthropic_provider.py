"""Claude through the official SDK: `AsyncAnthropic().messages.stream`."""

from __future__ import annotations

import asyncio
import contextvars
import json
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import anthropic
import httpx2
from anthropic.types import RawMessageStreamEvent

from chat.errors import ReplyFailure
from chat.providers.base import (
    STREAMED_TEXT,
    Finished,
    ReplyRequest,
    Started,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallReady,
    ToolCallStarted,
)

_ClientKey = tuple[str, str, int, float, float, str]
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, anthropic.AsyncAnthropic]] = (
    weakref.WeakKeyDictionary()
)

# The HTTP transport under the SDK (CHAT_UPSTREAM_HTTP). "aiohttp" is the SDK's own
# `DefaultAioHttpClient` (the `anthropic[aiohttp]` extra): the same httpx2 client API, exceptions and
# timeouts, with aiohttp's C-accelerated connection underneath. Measured (issue 15, bench N=100, 300
# deltas at 30/s): the server's CPU per delta 378 -> 301 µs, since reading the upstream's bytes through
# httpx2/httpcore2/anyio was the largest single cost of a delta. "httpx" is the SDK's default transport.
TRANSPORTS = ("aiohttp", "httpx")


# The reply whose request the SDK is sending in this task: its `on_sending`. Set around `messages.create`,
# read by the HTTP client's request hook, which httpx awaits in the same task once the SDK has built the
# request and before the transport sends it.
_on_sending: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "chat_upstream_on_sending", default=None
)


async def _announce_sending(_request: httpx2.Request) -> None:
    callback = _on_sending.get()
    if callback is not None:
        callback()


def _client(
    api_key: str, base_url: str, max_retries: int, connect: float, read: float, transport: str
) -> anthropic.AsyncAnthropic:
    # One client (one connection pool, reused across replies) per event loop and configuration: a pool's
    # connections belong to the loop that opened them.
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (api_key, base_url, max_retries, connect, read, transport)
    if key not in per_loop:
        timeout = anthropic.Timeout(read, connect=connect)
        # The SDK's own HTTP clients (its defaults), with the hook that tells a reply its request is leaving.
        http_client = (
            anthropic.DefaultAioHttpClient if transport == "aiohttp" else anthropic.DefaultAsyncHttpxClient
        )
        per_loop[key] = anthropic.AsyncAnthropic(
            api_key=api_key or None,
            base_url=base_url or None,
            max_retries=max_retries,
            timeout=timeout,
            http_client=http_client(timeout=timeout, event_hooks={"request": [_announce_sending]}),
        )
    return per_loop[key]


class AnthropicProvider:
    name = "anthropic"
    is_demo = False

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        max_retries: int,
        connect_timeout: float,
        read_timeout: float,
        transport: str,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"Unknown upstream HTTP transport {transport!r}: use {' or '.join(TRANSPORTS)}.")
        self.read_timeout = read_timeout
        self.config = (api_key, base_url, max_retries, connect_timeout, read_timeout, transport)

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[StreamEvent, None]:
        turn = _Turn()
        try:
            # The raw event stream, not the `messages.stream()` helper: the helper rebuilds a full message
            # snapshot on every event (measured: 176 µs of CPU per delta against 73 µs). `_Turn` keeps the
            # little we need. Leaving `async with` (normally, by exception, or by cancellation) closes the
            # HTTP stream, which is how Stop stops billing.
            announcing = _on_sending.set(request.on_sending)
            try:
                response = await _client(*self.config).messages.create(
                    model=request.model,
                    max_tokens=request.max_tokens,
                    system=cached_system(request.system) or anthropic.omit,  # type: ignore[arg-type]
                    messages=cached_messages(request.messages),  # type: ignore[arg-type]
                    tools=request.tools or anthropic.omit,  # type: ignore[arg-type]
                    tool_choice=(
                        {"type": "none"} if request.tools and not request.allow_tools else anthropic.omit
                    ),
                    thinking=(
                        {"type": "enabled", "budget_tokens": request.thinking_budget}
                        if request.thinking_budget
                        else anthropic.omit
                    ),
                    stream=True,
                )
            finally:
                _on_sending.reset(announcing)  # before any yield: the caller's context is as it was
            events = cast("anthropic.AsyncStream[RawMessageStreamEvent]", response)
            async with events:
                # The stream's server-sent events as the SDK decodes them (`AsyncStream.raw_events`), each
                # event's JSON read by `_Turn` as it is, not made into the SDK's pydantic model first (see
                # `_Turn` for the measured reason). What the SDK's own iteration does besides, this does
                # too: skip pings and nameless or empty events, and fail on an `error` event.
                async for sse in anthropic.AsyncStream.raw_events(events.response):
                    if sse.event == "error":
                        raise _mid_stream_failure(sse.data)
                    if sse.event is None or sse.event == "ping" or not sse.data:
                        continue
                    for item in turn.feed(sse.json()):
                        yield item
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
        yield turn.finished()


CACHE_BREAKPOINT = {"type": "ephemeral"}
# Content blocks that may carry a cache breakpoint (thinking blocks may not).
_CACHEABLE = {"text", "image", "document", "tool_use", "tool_result", "search_result"}


def cached_system(system: str) -> list[dict[str, Any]]:
    """The system prompt as one text block ending in a cache breakpoint: tools and system are cached
    together (they come first in the prompt's prefix order)."""
    if not system:
        return []
    return [{"type": "text", "text": system, "cache_control": CACHE_BREAKPOINT}]


def cached_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with a cache breakpoint on the last cacheable block of the last message, so the next
    turn (or tool round) reads the whole conversation prefix from the cache. Never mutates its argument:
    the history's dicts are saved and replayed, and must not carry breakpoints into later requests."""
    if not messages:
        return messages
    last = messages[-1]
    content = last["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    for index in range(len(blocks) - 1, -1, -1):
        block = blocks[index]
        if block.get("type") in _CACHEABLE and not (block.get("type") == "text" and not block.get("text")):
            blocks[index] = {**block, "cache_control": CACHE_BREAKPOINT}
            return [*messages[:-1], {**last, "content": blocks}]
    return messages


REDACTED_NOTICE = "\n[Part of the reasoning was encrypted by the provider and is not shown.]\n"


class _Turn:
    """What one streamed assistant turn amounts to: its blocks, stop reason and usage.

    It reads each event as the API's JSON (a dict, in the Messages API's documented stream shapes), not as
    the SDK's pydantic model. Why: building the model (one of a union of event types) is most of what the
    SDK costs per event. Measured (issue 15, session 19, AMD EPYC): py-spy `--gil` at the bench's N=100
    had the SDK and pydantic on the stack in 24 % of the server's samples; per event, the SDK's SSE
    decoding took 4.5 µs, `json.loads` 6.6 and the model 25.5; the bench's CPU per delta at N=100 went from
    306 and 336 µs (two runs) to 279, at N=50 from 347 and 363 to 321. A field the API always sends is
    read with `[]`: an event without it is a broken upstream, and fails the reply as any error does.

    A text block is kept as its length only (`STREAMED_TEXT`): its text went out as `TextDelta`s, and the
    producer, which keeps the reply's text, fills it in. Thinking is kept whole (it is replayed with its
    signature, and the page's thinking text has notices the replay must not)."""

    def __init__(self) -> None:
        self.model = ""
        self.blocks: dict[int, dict[str, Any]] = {}
        self.tool_json: dict[int, list[str]] = {}
        self.stop_reason: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_creation_tokens: int | None = None
        self.cache_read_tokens: int | None = None

    def _usage(self, usage: dict[str, Any] | None) -> None:
        """Take the counts a usage object reports; message_delta's are cumulative, and null means unsent."""
        if not usage:
            return
        for name, key in (
            ("input_tokens", "input_tokens"),
            ("cache_creation_tokens", "cache_creation_input_tokens"),
            ("cache_read_tokens", "cache_read_input_tokens"),
        ):
            value = usage.get(key)
            if value is not None:
                setattr(self, name, value)

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        """One streamed event, as the API's JSON."""
        kind = event["type"]
        if kind == "content_block_delta":  # the hot path: one per token
            delta, index = event["delta"], event["index"]
            step = delta["type"]
            if step == "text_delta":
                text = delta["text"]
                self.blocks[index][STREAMED_TEXT] += len(text)
                return [TextDelta(text)] if text else []
            if step == "input_json_delta":
                self.tool_json[index].append(delta["partial_json"])
            elif step == "thinking_delta":
                thinking = delta["thinking"]
                self.blocks[index]["thinking"] += thinking
                return [ThinkingDelta(thinking)] if thinking else []
            elif step == "signature_delta":
                self.blocks[index]["signature"] += delta["signature"]
            return []
        if kind == "message_start":
            message = event["message"]
            self.model = message["model"]
            self._usage(message.get("usage"))
            return [
                Started(
                    model=self.model,
                    input_tokens=self.input_tokens,
                    cache_creation_tokens=self.cache_creation_tokens,
                    cache_read_tokens=self.cache_read_tokens,
                )
            ]
        if kind == "content_block_start":
            block, index = event["content_block"], event["index"]
            block_type = block["type"]
            if block_type == "tool_use":
                self.blocks[index] = {
                    "type": "tool_use",
                    "id": block["id"],
                    "name": block["name"],
                    "input": {},
                }
                self.tool_json[index] = []
                return [ToolCallStarted(id=block["id"], name=block["name"])]
            if block_type == "text":  # its start normally carries no text; any it does is streamed too
                text = block.get("text") or ""
                self.blocks[index] = {"type": "text", STREAMED_TEXT: len(text)}
                return [TextDelta(text)] if text else []
            if block_type == "thinking":
                thinking = block.get("thinking") or ""
                self.blocks[index] = {
                    "type": "thinking",
                    "thinking": thinking,
                    "signature": block.get("signature") or "",
                }
                return [ThinkingDelta(thinking)] if thinking else []
            elif block_type == "redacted_thinking":
                # Encrypted reasoning: kept byte for byte for the replay; the page only says it was there.
                self.blocks[index] = {"type": "redacted_thinking", "data": block["data"]}
                return [ThinkingDelta(REDACTED_NOTICE)]
            return []
        if kind == "content_block_stop" and event["index"] in self.tool_json:
            block = self.blocks[event["index"]]
            block["input"] = _parse_arguments("".join(self.tool_json.pop(event["index"])))
            return [ToolCallReady(id=block["id"], name=block["name"], input=block["input"])]
        if kind == "message_delta":
            usage = event.get("usage") or {}
            self.stop_reason = event["delta"].get("stop_reason")
            self.output_tokens = usage.get("output_tokens")
            self._usage(usage)
        return []

    def finished(self) -> Finished:
        content = [self.blocks[index] for index in sorted(self.blocks)]
        return Finished(
            stop_reason=self.stop_reason,
            model=self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_creation_tokens=self.cache_creation_tokens,
            cache_read_tokens=self.cache_read_tokens,
            content=[block for block in content if _replayable(block)],
        )


def _replayable(block: dict[str, Any]) -> bool:
    """Empty text blocks are refused by the API; a thinking block cut off before its signature arrived
    cannot be replayed (the signature is what the API checks)."""
    if block["type"] == "text":
        return bool(block[STREAMED_TEXT])
    if block["type"] == "thinking":
        return bool(block["signature"])
    return True


def _parse_arguments(raw: str) -> dict[str, Any]:
    """A tool_use block's streamed JSON input; what does not parse to an object becomes {} (the tool then
    reports the missing arguments to the model)."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def map_status_error(exc: anthropic.APIStatusError) -> ReplyFailure:
    status = exc.status_code
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


def _mid_stream_failure(data: str) -> ReplyFailure:
    """An `event: error` frame in the middle of the stream (`data`: its JSON text). (The SDK's own iteration
    raised it as an APIStatusError with status 200; `stream` reads the events itself, so it never does.)"""
    kind, detail = _error_fields(data, fallback="")
    if kind == "overloaded_error":
        return ReplyFailure("overloaded", "The model became overloaded in the middle of the response.")
    return ReplyFailure("stream_error", f"The model provider reported an error mid-response: {detail}")


def _error_body(exc: anthropic.APIStatusError) -> tuple[str, str]:
    return _error_fields(exc.body, fallback=str(exc))


def _error_fields(body: object, *, fallback: str) -> tuple[str, str]:
    """An error body's type and message (at most 200 characters), however it came: JSON text, parsed, or
    neither (then its text, or `fallback`)."""
    if isinstance(body, str):
        text = body
        try:
            body = json.loads(text)
        except ValueError:
            return "", text[:200]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("type", "")), str(error.get("message", ""))[:200]
    return "", fallback[:200]
