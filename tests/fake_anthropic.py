"""A scriptable fake of the Anthropic Messages API, speaking real HTTP/1.1 on 127.0.0.1.

Point the real SDK at it (``base_url=fake.url`` or ``ANTHROPIC_BASE_URL``) and script each response::

    fake = FakeAnthropic().start()
    fake.enqueue(Text("Hel"), Wait(go), Text("lo"), End())
    ...
    fake.stop()

``POST /v1/messages`` with ``"stream": true`` answers ``200 text/event-stream`` (chunked), one SSE frame
(``event: <name>\\ndata: <json>\\n\\n``) per write, each written to the socket before the next step runs.
Without ``"stream": true`` it answers a plain JSON message built from the same script.

Benchmark mode: ``python -m tests.fake_anthropic --port 0 --rate 30 --deltas 600 [--port-file F]`` serves
streams of ``--deltas`` text deltas (``"w{i} "``) paced at ``--rate`` per second on an absolute schedule; each
``content_block_delta`` carries an extra ``"emitted_at": time.time()`` field (ignored by the SDK) so a client
on the same host can compute latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
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
    "Paced",
    "Ping",
    "Sleep",
    "Stall",
    "Step",
    "Text",
    "ToolUse",
    "Wait",
    "main",
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

    ``output_tokens`` defaults to the number of text deltas sent; ``input_tokens`` is also reported in
    ``message_start``.
    """

    stop_reason: str = "end_turn"
    output_tokens: int | None = None
    input_tokens: int = 12


@dataclass(frozen=True)
class Paced:
    """``count`` text deltas ``"w{i} "`` at ``rate`` per second on an absolute schedule (start + i / rate).

    Each delta frame carries an extra top-level ``"emitted_at": time.time()`` field. Used by benchmark mode.
    """

    count: int
    rate: float


Step: TypeAlias = Text | Sleep | Stall | Wait | Ping | ErrorEvent | Drop | HTTPError | ToolUse | End | Paced

_STEP_TYPES: tuple[type, ...] = (
    Text,
    Sleep,
    Stall,
    Wait,
    Ping,
    ErrorEvent,
    Drop,
    HTTPError,
    ToolUse,
    End,
    Paced,
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
        if isinstance(step, HTTPError) and i != 0:
            raise ValueError("HTTPError must be the first step of a script")


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
        if not self.open_block:
            self.index += 1
            self.open_block = True
            await self.send(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": self.index,
                    "content_block": {"type": "text", "text": ""},
                },
            )

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

    async def paced(self, step: Paced) -> None:
        """Emit on an absolute schedule from timer callbacks (no task wake-up per delta: cheap at scale).

        Frames are written straight to the transport in HTTP/1.1 chunked framing; the headers are already on
        the wire (aiohttp sends them in ``prepare``) and ``write_eof`` later adds the terminating chunk.
        """
        await self.open_text_block()
        if step.count <= 0:
            return
        loop = asyncio.get_running_loop()
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise _ClientGone
        done: asyncio.Future[None] = loop.create_future()
        start = loop.time()
        head = (
            'event: content_block_delta\ndata: {"type":"content_block_delta",'
            f'"index":{self.index},"delta":{{"type":"text_delta","text":"'
        )
        record = self.fake._record_sent
        generation = self.generation
        i = 0
        handle: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal i, handle
            if done.done():
                return
            if transport.is_closing():
                done.set_exception(_ClientGone())
                return
            text = f"w{i} "
            data = f'{head}{text}"}},"emitted_at":{time.time():.6f}}}\n\n'.encode()
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))
            self.text_deltas += 1
            record(text, generation)
            i += 1
            if i >= step.count:
                done.set_result(None)
            else:
                handle = loop.call_at(start + i / step.rate, tick)

        handle = loop.call_at(start, tick)
        try:
            await done
        finally:
            handle.cancel()

    async def tool_use(self, step: ToolUse) -> None:
        await self.close_block()
        self.index += 1
        self.open_block = True
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
                "usage": {"output_tokens": output_tokens},
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
        record: bool = True,
        backlog: int = 128,
    ) -> None:
        self.host = host
        self.port = port
        self._initial_default_script: tuple[Step, ...] = tuple(
            default_script if default_script is not None else _DEFAULT_SCRIPT
        )
        _validate(list(self._initial_default_script))
        self.default_script: list[Step] = list(self._initial_default_script)
        self.record = record  # False: do not keep `requests` / `sent` (benchmark mode)
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
        if self.record and generation == self._generation:
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
            if self.record:
                self.requests.append(
                    {
                        "body": body,
                        "headers": {k.lower(): v for k, v in request.headers.items()},
                        "path": request.path,
                    }
                )
            script = self._queue.popleft() if self._queue else list(self.default_script)
        if not isinstance(body, dict):
            return self._error_response(400, "invalid_request_error", "Request body is not a JSON object")
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
    def _input_tokens(script: list[Step]) -> int:
        return next((s.input_tokens for s in script if isinstance(s, End)), End().input_tokens)

    def _message(self, body: dict[str, Any], script: list[Step]) -> dict[str, Any]:
        return {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens(script), "output_tokens": 1},
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
                elif isinstance(step, Paced):
                    await stream.paced(step)
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
            if isinstance(step, Text | Paced):
                parts = [step.text] if isinstance(step, Text) else [f"w{i} " for i in range(step.count)]
                if not content or content[-1]["type"] != "text":
                    content.append({"type": "text", "text": ""})
                for part in parts:
                    content[-1]["text"] += part
                    texts.append(part)
                text_deltas += len(parts)
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


# ----------------------------------------------------------------------------------------------------------
# Benchmark CLI
# ----------------------------------------------------------------------------------------------------------


def _raise_nofile_limit() -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_anthropic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--rate", type=float, default=30.0, help="text deltas per second per stream")
    parser.add_argument("--deltas", type=int, default=600, help="text deltas per stream")
    parser.add_argument("--port-file", help="write the server URL to this file (atomically) once listening")
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.deltas < 0:
        parser.error("--rate must be > 0 and --deltas >= 0")

    _raise_nofile_limit()
    fake = FakeAnthropic(
        args.host,
        args.port,
        default_script=[Paced(args.deltas, args.rate), End()],
        record=False,
        backlog=args.backlog,
    ).start()
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(fake.url + "\n")
        os.replace(tmp, args.port_file)
    print(fake.url, flush=True)

    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not done.wait(1.0):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
