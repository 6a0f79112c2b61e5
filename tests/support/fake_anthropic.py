"""A scriptable fake of the Anthropic Messages API, speaking real HTTP/1.1 on 127.0.0.1.

Point the real SDK at it (``base_url=fake.url`` or ``ANTHROPIC_BASE_URL``) and script each response::

    fake = FakeAnthropic().start()
    fake.enqueue(Text("Hel"), Wait(go), Text("lo"), End())
    ...
    fake.stop()

``POST /v1/messages`` with ``"stream": true`` answers ``200 text/event-stream`` (chunked), one SSE frame
(``event: <name>\\ndata: <json>\\n\\n``) per write, each written to the socket before the next step runs.
Without ``"stream": true`` it answers a plain JSON message built from the same script.

The benchmark's upstream (paced, self-timestamped deltas) is ``bench.upstream``; this fake serves tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aiohttp import web

__all__ = [
    "Drop",
    "End",
    "ErrorEvent",
    "FakeAnthropic",
    "HTTPError",
    "Ping",
    "RedactedThinking",
    "Signature",
    "Sleep",
    "Stall",
    "Step",
    "Text",
    "Thinking",
    "ToolUse",
    "Wait",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Script steps
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """One ``content_block_delta`` / ``text_delta``; opens a text block first if none is open."""

    text: str


@dataclass(frozen=True)
class Thinking:
    """One ``thinking_delta``; opens a ``thinking`` block first (closing any other open block) if none is."""

    text: str


@dataclass(frozen=True)
class Signature:
    """The ``signature_delta`` that ends a thinking block, then its ``content_block_stop`` (as in the API)."""

    signature: str


@dataclass(frozen=True)
class RedactedThinking:
    """A whole ``redacted_thinking`` block (``content_block_start`` with its opaque ``data``, then stop)."""

    data: str


@dataclass(frozen=True)
class Sleep:
    """Pause (``asyncio.sleep``) before the next step."""

    seconds: float


@dataclass(frozen=True)
class Stall:
    """Send nothing for ``seconds`` (same as :class:`Sleep`; reads better for read-timeout tests)."""

    seconds: float


@dataclass(frozen=True)
class Wait:
    """Hold the script until a test sets ``event`` (polled, never blocking the server loop).

    If ``timeout`` passes first the script continues anyway.
    """

    event: threading.Event
    timeout: float = 10.0


@dataclass(frozen=True)
class Unanswered:
    """First step only: the request is read and recorded, then nothing at all is answered (not even the
    status line) until a test sets ``event`` (or ``timeout`` passes); then the rest of the script runs."""

    event: threading.Event
    timeout: float = 10.0


@dataclass(frozen=True)
class Ping:
    """An ``event: ping`` frame."""


@dataclass(frozen=True)
class ErrorEvent:
    """A mid-stream ``event: error`` frame, then the response ends (cleanly, no ``message_stop``)."""

    type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class Drop:
    """Abort the TCP connection at once (``transport.abort()``): no terminating chunk."""


@dataclass(frozen=True)
class HTTPError:
    """Must be the first step: answer ``status`` with the JSON error body instead of a stream.

    Sends ``x-should-retry: false`` unless ``retry_after`` is given (then ``retry-after: <seconds>``).
    """

    status: int
    type: str
    message: str
    retry_after: float | None = None


@dataclass(frozen=True)
class ToolUse:
    """Close any open block, then a ``tool_use`` block streamed as ``input_json_delta`` chunks.

    The first delta's ``partial_json`` is ``""`` (as the real API sends), then one delta per chunk.
    """

    id: str
    name: str
    input_chunks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class End:
    """Close the open block, ``message_delta`` (stop_reason, usage) and ``message_stop``; end the response.

    ``output_tokens`` defaults to the number of text deltas sent. The input usage — ``input_tokens`` (not
    counting cached tokens), ``cache_creation_input_tokens`` and ``cache_read_input_tokens`` — is reported
    in ``message_start`` (so a stream cut off before this step still announced it) and again, cumulative,
    in ``message_delta``, as the real API does.
    """

    stop_reason: str = "end_turn"
    output_tokens: int | None = None
    input_tokens: int = 12
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


Step: TypeAlias = (
    Text
    | Thinking
    | Signature
    | RedactedThinking
    | Sleep
    | Stall
    | Wait
    | Unanswered
    | Ping
    | ErrorEvent
    | Drop
    | HTTPError
    | ToolUse
    | End
)

_STEP_TYPES: tuple[type, ...] = (
    Text,
    Thinking,
    Signature,
    RedactedThinking,
    Sleep,
    Stall,
    Wait,
    Unanswered,
    Ping,
    ErrorEvent,
    Drop,
    HTTPError,
    ToolUse,
    End,
)

# Status the non-streaming endpoint answers for an ErrorEvent of a given type.
_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_DEFAULT_SCRIPT: tuple[Step, ...] = (Text("Hello"), Text(" from"), Text(" the fake."), End())


def _validate(steps: list[Step]) -> None:
    for i, step in enumerate(steps):
        if not isinstance(step, _STEP_TYPES):
            raise TypeError(f"step {i} is not a fake_anthropic step: {step!r}")
        if isinstance(step, HTTPError | Unanswered) and i != 0:
            raise ValueError(f"{type(step).__name__} must be the first step of a script")


IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
THINKING_TYPES = ("thinking", "redacted_thinking")


def request_problem(body: dict[str, Any]) -> str | None:
    """The reason the real Messages API would refuse this request's image/document blocks or thinking
    configuration (400 invalid_request_error), or None. Only these features are checked."""
    import base64
    import binascii

    messages = body.get("messages") or []
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            kind = block.get("type")
            where = f"messages.{i}.content.{j}"
            if kind in ("image", "document"):
                if message.get("role") != "user":
                    return f"{where}: {kind} blocks are only allowed in user messages"
                source = block.get("source") or {}
                allowed = IMAGE_MEDIA_TYPES if kind == "image" else ("application/pdf",)
                if source.get("type") != "base64" or source.get("media_type") not in allowed:
                    return f"{where}.source: unsupported {kind} source {source.get('media_type')!r}"
                try:
                    base64.b64decode(source.get("data", ""), validate=True)
                except (binascii.Error, ValueError):
                    return f"{where}.source.data: invalid base64 data"
            elif kind == "thinking" and not block.get("signature"):
                return f"{where}.signature: Field required"
            elif kind == "redacted_thinking" and not block.get("data"):
                return f"{where}.data: Field required"
    thinking = body.get("thinking")
    if not thinking or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens", 0)
    if budget < 1024:
        return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    if budget >= body.get("max_tokens", 0):
        return "`max_tokens` must be greater than `thinking.budget_tokens`"
    if messages and messages[-1].get("role") == "assistant":
        return "This model does not support assistant message prefill when thinking is enabled."
    # In a tool loop, the assistant turn before the final tool_result must begin with its thinking.
    last = messages[-1] if messages else {}
    if isinstance(last.get("content"), list) and any(b.get("type") == "tool_result" for b in last["content"]):
        previous = messages[-2] if len(messages) > 1 else {}
        first = (previous.get("content") or [{}])[0]
        if not isinstance(first, dict) or first.get("type") not in THINKING_TYPES:
            return (
                "Expected `thinking` or `redacted_thinking`, but found `"
                f"{first.get('type') if isinstance(first, dict) else 'text'}`. When `thinking` is enabled, a "
                "final `assistant` message must start with a thinking block."
            )
    return None


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _ClientGone(Exception):
    """The client went away while we were writing."""


class _Stream:
    """State of one streamed response."""

    def __init__(
        self, fake: FakeAnthropic, generation: int, request: web.Request, resp: web.StreamResponse
    ) -> None:
        self.fake = fake
        self.generation = generation
        self.request = request
        self.resp = resp
        self.index = -1  # index of the last content block started
        self.open_block = False
        self.open_type = ""  # "text" | "thinking" | "tool_use" while a block is open
        self.text_deltas = 0

    async def write(self, data: bytes) -> None:
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise _ClientGone
        try:
            await self.resp.write(data)
        except ConnectionError as exc:  # aiohttp's ClientConnectionResetError is a ConnectionResetError
            raise _ClientGone from exc

    async def send(self, event: str, data: dict[str, Any]) -> None:
        await self.write(_frame(event, data))

    async def close_block(self) -> None:
        if self.open_block:
            await self.send("content_block_stop", {"type": "content_block_stop", "index": self.index})
            self.open_block = False

    async def open_text_block(self) -> None:
        if self.open_block and self.open_type != "text":
            await self.close_block()
        if not self.open_block:
            self.index += 1
            self.open_block = True
            self.open_type = "text"
            await self.send(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": self.index,
                    "content_block": {"type": "text", "text": ""},
                },
            )

    async def thinking(self, text: str) -> None:
        if self.open_block and self.open_type != "thinking":
            await self.close_block()
        if not self.open_block:
            self.index += 1
            self.open_block = True
            self.open_type = "thinking"
            block = {"type": "thinking", "thinking": "", "signature": ""}
            await self.send(
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        delta = {"type": "thinking_delta", "thinking": text}
        await self.send(
            "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}
        )

    async def signature(self, signature: str) -> None:
        if not (self.open_block and self.open_type == "thinking"):
            await self.thinking("")
        delta = {"type": "signature_delta", "signature": signature}
        await self.send(
            "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}
        )
        await self.close_block()

    async def redacted_thinking(self, data: str) -> None:
        await self.close_block()
        self.index += 1
        block = {"type": "redacted_thinking", "data": data}
        await self.send(
            "content_block_start",
            {"type": "content_block_start", "index": self.index, "content_block": block},
        )
        await self.send("content_block_stop", {"type": "content_block_stop", "index": self.index})

    async def text(self, text: str) -> None:
        await self.open_text_block()
        delta = {
            "type": "content_block_delta",
            "index": self.index,
            "delta": {"type": "text_delta", "text": text},
        }
        # Recorded before the write: once the client can see a token, `sent` holds it (no race with the
        # client thread); the timestamp is at most one local socket write early.
        self.fake._record_sent(text, self.generation)
        await self.send("content_block_delta", delta)
        self.text_deltas += 1

    async def tool_use(self, step: ToolUse) -> None:
        await self.close_block()
        self.index += 1
        self.open_block = True
        self.open_type = "tool_use"
        block = {"type": "tool_use", "id": step.id, "name": step.name, "input": {}}
        await self.send(
            "content_block_start",
            {"type": "content_block_start", "index": self.index, "content_block": block},
        )
        for chunk in ["", *step.input_chunks]:
            delta = {"type": "input_json_delta", "partial_json": chunk}
            await self.send(
                "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}
            )
        await self.close_block()

    async def end(self, step: End) -> None:
        await self.close_block()
        output_tokens = step.output_tokens if step.output_tokens is not None else self.text_deltas
        await self.send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": step.stop_reason, "stop_sequence": None},
                "usage": {
                    "input_tokens": step.input_tokens,
                    "cache_creation_input_tokens": step.cache_creation_input_tokens,
                    "cache_read_input_tokens": step.cache_read_input_tokens,
                    "output_tokens": output_tokens,
                },
            },
        )
        await self.send("message_stop", {"type": "message_stop"})


class FakeAnthropic:
    """A fake Anthropic Messages API server running in a daemon thread with its own event loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        default_script: list[Step] | None = None,
        backlog: int = 128,
    ) -> None:
        self.host = host
        self.port = port
        self._initial_default_script: tuple[Step, ...] = tuple(
            default_script if default_script is not None else _DEFAULT_SCRIPT
        )
        _validate(list(self._initial_default_script))
        self.default_script: list[Step] = list(self._initial_default_script)
        self.backlog = backlog
        self.requests: list[dict[str, Any]] = []
        self.sent: list[tuple[str, float]] = []
        self.client_disconnects: int = 0
        self.connections_closed = threading.Event()  # set when client_disconnects becomes > 0
        self.request_count: int = 0
        self.active_streams: int = 0
        self._queue: deque[list[Step]] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._generation = 0
        self._handlers: dict[asyncio.Task[Any], int] = {}  # in-flight handler task -> generation

    # ------------------------------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("FakeAnthropic is not started")
        return f"http://{self.host}:{self.port}"

    def enqueue(self, *steps: Step) -> None:
        """Script the next request not yet answered (FIFO: one script per call)."""
        script = list(steps)
        _validate(script)
        with self._lock:
            self._queue.append(script)

    def reset(self) -> None:
        """Clear queue, ``requests``, ``sent``, counters; restore the constructor's ``default_script``.

        Responses still in flight from before the reset are cancelled (their connections close) and can no
        longer touch ``sent`` or the counters, so a session-wide fake gives each test a clean slate.
        """
        with self._lock:
            self._generation += 1
            self._queue.clear()
            self.default_script = list(self._initial_default_script)
            self.requests.clear()
            self.sent.clear()
            self.client_disconnects = 0
            self.connections_closed.clear()
            self.request_count = 0
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel_stale_handlers)

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block (in the calling thread) until ``client_disconnects >= count``; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.client_disconnects < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self) -> FakeAnthropic:
        if self._thread is not None:
            raise RuntimeError("FakeAnthropic already started")
        self._stopping = False
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"FakeAnthropic-{id(self):x}", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            self._thread = None
            self._loop = None
            raise RuntimeError("FakeAnthropic failed to start") from (failure[0] if failure else None)
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        self._stopping = True
        if runner is not None and not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(runner), loop)
            with contextlib.suppress(Exception):
                fut.result(timeout=10)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._runner = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------------- server

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._handle_messages)
        # handler_cancellation: a client that goes away cancels its handler even while it sleeps / waits.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=self.backlog)
        await site.start()
        self.port = site.port
        self._runner = runner

    async def _shutdown(self, runner: web.AppRunner) -> None:
        for task in list(self._handlers):  # in-flight responses end at once instead of after a grace period
            task.cancel()
        await runner.cleanup()

    def _record_sent(self, text: str, generation: int) -> None:
        if generation == self._generation:
            self.sent.append((text, time.time()))

    def _count_disconnect(self, generation: int) -> None:
        with self._lock:
            if self._stopping or generation != self._generation:
                return
            self.client_disconnects += 1
        self.connections_closed.set()

    def _cancel_stale_handlers(self) -> None:
        for task, generation in list(self._handlers.items()):
            if generation != self._generation:
                task.cancel()

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        generation = self._generation
        self._handlers[task] = generation
        try:
            return await self._handle(request, generation)
        except asyncio.CancelledError:
            self._count_disconnect(generation)  # ignored when stopping or after a reset
            raise
        finally:
            self._handlers.pop(task, None)

    async def _handle(self, request: web.Request, generation: int) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self.request_count += 1
            self.requests.append(
                {
                    "body": body,
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                    "path": request.path,
                }
            )
            script = self._queue.popleft() if self._queue else list(self.default_script)
        if script and isinstance(script[0], Unanswered):
            hold, script = script[0], script[1:]
            await self._wait(Wait(hold.event, hold.timeout))
        if not isinstance(body, dict):
            return self._error_response(400, "invalid_request_error", "Request body is not a JSON object")
        problem = request_problem(body)
        if problem is not None:  # what the real API refuses with 400 for these features
            return self._error_response(400, "invalid_request_error", problem)
        if script and isinstance(script[0], HTTPError):
            err = script[0]
            return self._error_response(err.status, err.type, err.message, err.retry_after)
        if body.get("stream"):
            return await self._stream(request, generation, body, script)
        return await self._non_stream(request, generation, body, script)

    def _error_response(
        self, status: int, type_: str, message: str, retry_after: float | None = None
    ) -> web.Response:
        headers = {"request-id": self._next_id("req")}
        if retry_after is None:
            headers["x-should-retry"] = "false"
        else:
            headers["retry-after"] = f"{retry_after:g}"
        return web.json_response(
            {
                "type": "error",
                "error": {"type": type_, "message": message},
                "request_id": headers["request-id"],
            },
            status=status,
            headers=headers,
        )

    @staticmethod
    def _usage(script: list[Step]) -> dict[str, Any]:
        """The input usage ``message_start`` announces (the script's End, or End's defaults)."""
        end = next((s for s in script if isinstance(s, End)), End())
        return {
            "input_tokens": end.input_tokens,
            "cache_creation_input_tokens": end.cache_creation_input_tokens,
            "cache_read_input_tokens": end.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": end.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": 1,
            "service_tier": "standard",
        }

    def _message(self, body: dict[str, Any], script: list[Step]) -> dict[str, Any]:
        return {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(script),
        }

    async def _stream(
        self, request: web.Request, generation: int, body: dict[str, Any], script: list[Step]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "request-id": self._next_id("req"),
            },
        )
        resp.enable_chunked_encoding()
        self.active_streams += 1
        try:
            await resp.prepare(request)
            stream = _Stream(self, generation, request, resp)
            await stream.send(
                "message_start", {"type": "message_start", "message": self._message(body, script)}
            )
            for step in script:
                if isinstance(step, Text):
                    await stream.text(step.text)
                elif isinstance(step, Thinking):
                    await stream.thinking(step.text)
                elif isinstance(step, Signature):
                    await stream.signature(step.signature)
                elif isinstance(step, RedactedThinking):
                    await stream.redacted_thinking(step.data)
                elif isinstance(step, Sleep | Stall):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, Wait):
                    await self._wait(step)
                elif isinstance(step, Ping):
                    await stream.send("ping", {"type": "ping"})
                elif isinstance(step, ToolUse):
                    await stream.tool_use(step)
                elif isinstance(step, ErrorEvent):
                    error = {"type": "error", "error": {"type": step.type, "message": step.message}}
                    await stream.send("error", error)
                    break
                elif isinstance(step, Drop):
                    if request.transport is not None:
                        request.transport.abort()
                    return resp  # aiohttp's write_eof then fails quietly: "premature client disconnection"
                elif isinstance(step, End):
                    await stream.end(step)
                    break
            with contextlib.suppress(ConnectionError):
                await resp.write_eof()
        except _ClientGone:
            self._count_disconnect(generation)
        finally:
            self.active_streams -= 1
        return resp

    async def _wait(self, step: Wait) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + step.timeout
        # A threading.Event cannot be awaited; polling keeps the loop free and the wait cancellable.
        while not step.event.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def _non_stream(
        self, request: web.Request, generation: int, body: dict[str, Any], script: list[Step]
    ) -> web.StreamResponse:
        message = self._message(body, script)
        content: list[dict[str, Any]] = []
        texts: list[str] = []
        text_deltas = 0
        end: End | None = None
        for step in script:
            if isinstance(step, Text):
                if not content or content[-1]["type"] != "text":
                    content.append({"type": "text", "text": ""})
                content[-1]["text"] += step.text
                texts.append(step.text)
                text_deltas += 1
            elif isinstance(step, Sleep | Stall):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Wait):
                await self._wait(step)
            elif isinstance(step, ToolUse):
                raw_input = "".join(step.input_chunks)
                try:
                    tool_input = json.loads(raw_input) if raw_input else {}
                except ValueError:
                    tool_input = {}
                content.append({"type": "tool_use", "id": step.id, "name": step.name, "input": tool_input})
            elif isinstance(step, ErrorEvent):
                return self._error_response(_ERROR_STATUS.get(step.type, 500), step.type, step.message)
            elif isinstance(step, Drop):
                if request.transport is not None:
                    request.transport.abort()
                return web.Response()  # never reaches the client
            elif isinstance(step, End):
                end = step
                break
        message["content"] = content
        if end is not None:
            message["stop_reason"] = end.stop_reason
            message["usage"]["output_tokens"] = (
                end.output_tokens if end.output_tokens is not None else text_deltas
            )
        else:
            message["usage"]["output_tokens"] = text_deltas
        for text in texts:
            self._record_sent(text, generation)
        return web.json_response(message, headers={"request-id": self._next_id("req")})
