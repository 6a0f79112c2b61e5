"""The bench upstream: a fake Anthropic Messages API whose text deltas carry their own emit timestamps.

Same wire format and pacing technique as ``tests.support.fake_anthropic`` (one process, aiohttp, deltas
written from
timer callbacks on an absolute schedule ``arrival + ttft + i / rate``), but each delta's text is
``"w{i}@{time.time():.6f} "`` (the first one ``"w0@{emit}@{arrival} "``), written at the moment it is put
on the socket. Our app forwards only the text, so this makes every delta self-describing: a client on this
host gets the exact added latency as ``receive time - emit time`` per delta, whatever the app does to
chunking. The stream's parameters come from the last user message (``bench key=K n=N rate=R ttft=T``).

Extra endpoints: ``GET /_bench/sent`` (per key: deltas, characters and SHA-256 of the text sent),
``GET /_bench/stats`` (the upstream's own timer lateness, to show whether it keeps up),
``POST /_bench/reset``.

Run: ``python -m bench.upstream --port 0 --port-file F``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.common import KEY_RE, percentile, raise_nofile_limit, write_atomic

MAX_LATENESS_SAMPLES = 2_000_000


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


class Upstream:
    def __init__(self) -> None:
        self.sent: dict[str, dict[str, Any]] = {}
        self.lateness: list[float] = []
        self.active = 0
        self.peak_active = 0
        self.requests = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/_bench/sent", self.get_sent)
        app.router.add_get("/_bench/stats", self.get_stats)
        app.router.add_post("/_bench/reset", self.reset)
        return app

    async def get_sent(self, request: web.Request) -> web.Response:
        return web.json_response(self.sent)

    async def get_stats(self, request: web.Request) -> web.Response:
        samples = sorted(self.lateness)
        ms = [v * 1000 for v in samples]
        return web.json_response(
            {
                "requests": self.requests,
                "active": self.active,
                "peak_active": self.peak_active,
                "deltas": len(samples),
                "lateness_ms_p50": percentile(ms, 50),
                "lateness_ms_p99": percentile(ms, 99),
                "lateness_ms_max": ms[-1] if ms else None,
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.sent.clear()
        self.lateness.clear()
        self.peak_active = self.active
        self.requests = 0
        return web.json_response({"ok": True})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        self.requests += 1
        body = await request.json()
        match = KEY_RE.search(_last_user_text(body))
        if match is None:  # not a bench request (e.g. a stray warm-up): a short fixed reply
            key, count, rate, ttft = f"other-{self.requests}", 3, 100.0, 0.0
        else:
            key, count, rate, ttft = match[1], int(match[2]), float(match[3]), float(match[4])
        resp = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "request-id": f"req_bench{self.requests:07d}",
            },
        )
        resp.enable_chunked_encoding()
        record: dict[str, Any] = {
            "deltas": 0,
            "chars": 0,
            "sha256": "",
            "complete": False,
            "arrived": arrived,
        }
        self.sent[key] = record
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        digest = hashlib.sha256()
        try:
            await resp.prepare(request)
            message = {
                "id": f"msg_bench{self.requests:07d}",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", "bench"),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 12, "output_tokens": 1},
            }
            await resp.write(_frame("message_start", {"type": "message_start", "message": message}))
            await resp.write(
                _frame(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            await self._paced(request, count, rate, arrived, ttft, digest, record)
            await resp.write(_frame("content_block_stop", {"type": "content_block_stop", "index": 0}))
            await resp.write(
                _frame(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": count},
                    },
                )
            )
            await resp.write(_frame("message_stop", {"type": "message_stop"}))
            record["complete"] = True
            with contextlib.suppress(ConnectionError):
                await resp.write_eof()
        except (ConnectionError, _Gone):
            pass
        finally:
            self.active -= 1
        return resp

    async def _paced(
        self,
        request: web.Request,
        count: int,
        rate: float,
        arrived: float,
        ttft: float,
        digest: Any,
        record: dict[str, Any],
    ) -> None:
        """Write ``count`` deltas from timer callbacks (no task wake-up per delta: cheap at 1000 streams)."""
        loop = asyncio.get_running_loop()
        transport = request.transport
        if transport is None or transport.is_closing():
            raise _Gone
        if count <= 0:
            return
        done: asyncio.Future[None] = loop.create_future()
        start = loop.time() + max(0.0, arrived + ttft - time.time())
        head = (
            'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            '"delta":{"type":"text_delta","text":"'
        )
        lateness = self.lateness
        markdown_every = MARKDOWN_EVERY
        i = 0
        handle: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal i, handle
            if done.done():
                return
            if transport.is_closing():
                done.set_exception(_Gone())
                return
            now = time.time()
            if len(lateness) < MAX_LATENESS_SAMPLES:
                lateness.append(loop.time() - (start + i / rate))
            text = f"w{i}@{now:.6f}@{arrived:.6f} " if i == 0 else f"w{i}@{now:.6f} "
            wire = text
            if markdown_every and (i + 1) % markdown_every == 0:  # Markdown shape: end a paragraph
                text, wire = text + "\n\n", text + "\\n\\n"
            transport.write(_chunk(f'{head}{wire}"}}}}\n\n'.encode()))
            digest.update(text.encode())
            record["deltas"] = i + 1
            record["chars"] += len(text)
            i += 1
            if i >= count:
                done.set_result(None)
            else:
                handle = loop.call_at(start + i / rate, tick)

        handle = loop.call_at(start, tick)
        try:
            await done
        finally:
            handle.cancel()
            record["sha256"] = digest.hexdigest()


# BENCH_MARKDOWN_EVERY=K: every K-th delta ends a paragraph ("\n\n"), so an app that renders finished
# Markdown blocks while streaming does that work in the benchmark too (0: one endless paragraph).
MARKDOWN_EVERY = int(os.environ.get("BENCH_MARKDOWN_EVERY", "0") or 0)


class _Gone(Exception):
    """The client went away."""


async def _serve(host: str, port: int, port_file: str | None, backlog: int) -> None:
    upstream = Upstream()
    runner = web.AppRunner(upstream.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    real_port = sockets[0].getsockname()[1] if sockets else port
    url = f"http://{host}:{real_port}"
    if port_file:
        write_atomic(Path(port_file), url + "\n")
    print(url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    asyncio.run(_serve(args.host, args.port, args.port_file, args.backlog))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
