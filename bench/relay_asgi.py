"""Baseline (b): a minimal raw-ASGI SSE relay. No Django, no database, no channel layer.

``GET /stream?key=<user text>`` opens an upstream stream with the official SDK (``AsyncAnthropic`` from
``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY``) and relays each text delta as one SSE event, framed and
escaped exactly like our app (``chat/streaming/sse.py`` is dependency-free, so it is reused), then
``event: done``.
``GET /`` answers 200 (readiness). Serve with ``daphne bench.relay_asgi:application``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anthropic
import httpx2

from chatsite.memtrace import install_from_env


def _load_sse() -> Any:
    """The app's framing module, loaded by path: importing the `chat.streaming` package would set up Django,
    which this baseline must not have."""
    path = Path(__file__).resolve().parent.parent / "chat" / "streaming" / "sse.py"
    spec = importlib.util.spec_from_file_location("chatsite_sse", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sse = _load_sse()

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_clients: dict[int, anthropic.AsyncAnthropic] = {}


# The SDK's HTTP transport (`bench.sweep --relay-http`): its default, httpx, unless told to use aiohttp, the
# transport the app uses by default (CHAT_UPSTREAM_HTTP), so the two web tiers can be compared on one client.
TRANSPORT = os.environ.get("RELAY_UPSTREAM_HTTP", "httpx")


def _client() -> anthropic.AsyncAnthropic:
    loop_id = id(asyncio.get_running_loop())
    if loop_id not in _clients:
        limits = httpx2.Limits(max_connections=10_000, max_keepalive_connections=2_000)
        _clients[loop_id] = anthropic.AsyncAnthropic(
            max_retries=0,
            timeout=anthropic.Timeout(60.0, connect=5.0),
            http_client=(
                anthropic.DefaultAioHttpClient(limits=limits)
                if TRANSPORT == "aiohttp"
                else anthropic.DefaultAsyncHttpxClient(limits=limits)
            ),
        )
    return _clients[loop_id]


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _relay(key: str, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    await send({"type": "http.response.body", "body": sse.OPEN, "more_body": True})
    sent = 0
    async with _client().messages.stream(
        model="bench-relay", max_tokens=4096, messages=[{"role": "user", "content": key}]
    ) as stream:
        async for text in stream.text_stream:
            if text:
                sent += len(text)
                await send(
                    {
                        "type": "http.response.body",
                        "body": sse.text_event("delta", text, event_id=sent),
                        "more_body": True,
                    }
                )
    await send({"type": "http.response.body", "body": sse.event("done", "ok", event_id=sent)})


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] != "/stream":
        await _plain(send, 200 if scope["path"] == "/" else 404, b"relay\n")
        return
    query = parse_qs(scope.get("query_string", b"").decode())
    key = query.get("key", [""])[0]
    relay = asyncio.ensure_future(_relay(key, send))

    async def watch_disconnect() -> None:
        while True:
            if (await receive())["type"] == "http.disconnect":
                relay.cancel()
                return

    watcher = asyncio.ensure_future(watch_disconnect())
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await relay
    finally:
        watcher.cancel()


install_from_env()  # as the app does (CHAT_TRACEMALLOC_DIR): the same heap snapshots, to compare
