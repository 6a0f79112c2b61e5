"""The load client: N concurrent streams against one target, in its own process (asyncio + aiohttp).

Targets:
- ``ours`` (also for ``uvicorn``, ``scaled`` and ``bounded``): POST ``/c/start/`` as a logged-in user (htmx
  headers, CSRF), read the ``sse-connect`` URL from the fragment, GET it and read the SSE stream to
  ``event: done``. With several base URLs (``scaled``: one per server process) there is no sticky routing
  (``--routing``): ``cross`` (the default) has stream i POST to process i and GET its stream from process
  i+1, so every stream is served across processes through the channel layer; ``random`` sends each request
  to a process drawn at random (seeded by the stream's index, so every run draws alike), as a balancer that
  spreads connections does: with P processes about 1/P of the streams are read where they were started.
  (A round-robin over the requests in the order they leave would cross every stream too: the ramped starts
  rarely overlap, so each start and its stream take consecutive turns.) ``same`` reads every stream from
  the process its start was posted to (stream i: process i), as sticky routing would: what splitting the
  load costs when no delta crosses. ``split`` sends the starts to the first half of the processes and the
  streams to the other half, as a proxy routing by path to two pools would: every delta crosses, but each
  process does one kind of work. A start answered 503 with ``Retry-After`` (admission control) counts as
  *refused*, not as an error;
- ``relay``: GET ``/stream?key=...`` on the raw ASGI relay;
- ``sdk``: ``AsyncAnthropic().messages.stream`` straight against the upstream (no web tier: the floor).

The hot loop only timestamps raw chunks (``time.time()`` on arrival); parsing happens after each stream ends,
so it does not add to the measured latency. A delta's receive time is that of the chunk completing its SSE
event (for ``sdk``: when ``text_stream`` yields it). Writes a JSON summary (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import html
import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from bench.common import TOKEN_RE, make_key_text, percentile, raise_nofile_limit, write_atomic

SSE_CONNECT_RE = re.compile(r'sse-connect="([^"]+)"')
REPLY_ID_RE = re.compile(r"/m/(\d+)/stream/")
WARMUP_DELTAS = 3  # the warm-up stream (index -1) before a level's streams: not counted in the level
CSRF = "b" * 32  # any well-formed secret: Django only checks that cookie and header agree


@dataclass
class StreamResult:
    key: str
    ok: bool = False
    error: str = ""
    timeout: bool = False
    refused: bool = False  # the start was answered 503 + Retry-After (admission control): not an error
    done: bool = False
    deltas: int = 0
    events: int = 0  # SSE `delta` events received (the app may coalesce several deltas into one event)
    chars: int = 0
    sha256: str = ""
    reply_id: int | None = None
    ttft_added_ms: float | None = None
    # Of the TTFT added, the part before the upstream: start sent -> the model request reached the upstream.
    to_upstream_ms: float | None = None
    # Start sent -> the start's answer read (the app only), and -> the event stream's headers received: with
    # `to_upstream_ms`, where in the start a first token's wait went.
    answered_ms: float | None = None
    stream_open_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    same_process: bool | None = None  # the stream was read from the process its start was posted to


@dataclass(frozen=True)
class Config:
    target: str
    base_urls: list[str]  # one per server process (see `process_for`)
    n: int
    deltas: int
    rate: float
    ttft: float
    ramp: float
    grace: float
    run_id: str
    sessions: list[str]
    routing: str = "cross"  # see the module docstring: "cross", "random", "same" or "split"


ROUTINGS = ("cross", "random", "same", "split")


def process_for(cfg: Config, slot: int, hop: int) -> int:
    """The server process (index into `cfg.base_urls`) that request `hop` (0: the start, 1: the stream) of
    stream `slot` goes to."""
    if cfg.routing == "random":
        return random.Random(f"{slot}-{hop}").randrange(len(cfg.base_urls))
    if cfg.routing == "split":  # starts: processes [0, h); streams: [h, P); one pool when P = 1
        half = max(1, len(cfg.base_urls) // 2)
        pool = range(half) if hop == 0 else range(half, len(cfg.base_urls)) or range(half)
        return pool[slot % len(pool)]
    if cfg.routing == "same":
        return slot % len(cfg.base_urls)
    return (slot + hop) % len(cfg.base_urls)


def parse_sse(chunks: list[tuple[float, bytes]]) -> tuple[list[tuple[float, str]], bool]:
    """Delta texts with the receive time of the chunk that completed each event; whether `done` came."""
    pieces: list[tuple[float, str]] = []
    done = False
    buf = b""
    for t, chunk in chunks:
        buf += chunk
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            raw, buf = buf[:end], buf[end + 2 :]
            name, data = "message", []
            for line in raw.decode().split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(" ") else value)
            if name == "delta":
                pieces.append((t, html.unescape("\n".join(data))))
            elif name == "done":
                done = True
    return pieces, done


def analyse(result: StreamResult, t0: float, pieces: list[tuple[float, str]], expected: int) -> None:
    full = "".join(text for _, text in pieces)
    ends: list[int] = []
    pos = 0
    for _, text in pieces:
        pos += len(text)
        ends.append(pos)
    result.chars = len(full)
    result.events = len(pieces)
    result.sha256 = hashlib.sha256(full.encode()).hexdigest()
    count = 0
    for match in TOKEN_RE.finditer(full):
        received = pieces[bisect.bisect_left(ends, match.end())][0]
        emitted = float(match[2])
        result.latencies_ms.append((received - emitted) * 1000)
        if match[3] is not None:  # the first delta: also carries the upstream's request arrival time
            upstream_ttft = emitted - float(match[3])
            result.ttft_added_ms = ((received - t0) - upstream_ttft) * 1000
            result.to_upstream_ms = (float(match[3]) - t0) * 1000
        count += 1
    result.deltas = count
    if count != expected:
        result.error = result.error or f"incomplete: {count}/{expected} deltas"


async def _read_sse(resp: aiohttp.ClientResponse) -> list[tuple[float, bytes]]:
    chunks: list[tuple[float, bytes]] = []
    async for chunk in resp.content.iter_any():
        chunks.append((time.time(), chunk))
    return chunks


async def one_http(cfg: Config, session: aiohttp.ClientSession, index: int) -> StreamResult:
    key = f"{cfg.run_id}-{index}"
    expected = cfg.deltas if index >= 0 else WARMUP_DELTAS
    text = make_key_text(key, expected, cfg.rate, cfg.ttft)
    result = StreamResult(key=key)
    await asyncio.sleep(cfg.ramp * max(0, index) / max(1, cfg.n))
    slot = max(0, index)  # no sticky routing: see `process_for`
    t0 = time.time()
    try:
        async with asyncio.timeout(cfg.ttft + cfg.deltas / cfg.rate + cfg.grace):
            if cfg.target == "relay":
                url = f"{cfg.base_urls[process_for(cfg, slot, 1)]}/stream?key={quote(text)}"
                headers: dict[str, str] = {}
            else:
                sessionid = cfg.sessions[index % len(cfg.sessions)]
                headers = {"Cookie": f"sessionid={sessionid}; csrftoken={CSRF}"}
                posted_to = process_for(cfg, slot, 0)
                async with session.post(
                    f"{cfg.base_urls[posted_to]}/c/start/",
                    data={"text": text},
                    headers={**headers, "HX-Request": "true", "X-CSRFToken": CSRF},
                ) as resp:
                    body = await resp.text()
                    result.answered_ms = (time.time() - t0) * 1000
                    if resp.status == 503 and "Retry-After" in resp.headers:
                        result.refused = True  # admission control said "busy, come back later"
                        return result
                    if resp.status != 200:
                        result.error = f"start HTTP {resp.status}"
                        return result
                found = SSE_CONNECT_RE.search(body)
                if found is None:
                    result.error = "start: no sse-connect in the fragment"
                    return result
                path = html.unescape(found[1])
                reply = REPLY_ID_RE.search(path)
                result.reply_id = int(reply[1]) if reply else None
                read_from = process_for(cfg, slot, 1)
                result.same_process = read_from == posted_to
                url = f"{cfg.base_urls[read_from]}{path}"
            async with session.get(url, headers=headers) as resp:
                result.stream_open_ms = (time.time() - t0) * 1000
                if resp.status != 200:
                    result.error = f"stream HTTP {resp.status}"
                    return result
                chunks = await _read_sse(resp)
    except TimeoutError:
        result.timeout = True
        result.error = "timeout"
        return result
    except (aiohttp.ClientError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    pieces, result.done = parse_sse(chunks)
    analyse(result, t0, pieces, expected)
    if not result.done and not result.error:
        result.error = "no done event"
    result.ok = not result.error
    return result


async def one_sdk(cfg: Config, client: Any, index: int) -> StreamResult:
    key = f"{cfg.run_id}-{index}"
    expected = cfg.deltas if index >= 0 else WARMUP_DELTAS
    text = make_key_text(key, expected, cfg.rate, cfg.ttft)
    result = StreamResult(key=key)
    await asyncio.sleep(cfg.ramp * max(0, index) / max(1, cfg.n))
    pieces: list[tuple[float, str]] = []
    t0 = time.time()
    try:
        async with asyncio.timeout(cfg.ttft + cfg.deltas / cfg.rate + cfg.grace):
            async with client.messages.stream(
                model="bench-sdk", max_tokens=4096, messages=[{"role": "user", "content": text}]
            ) as stream:
                async for delta in stream.text_stream:
                    pieces.append((time.time(), delta))
                final = await stream.get_final_message()
                result.done = final.stop_reason == "end_turn"
    except TimeoutError:
        result.timeout = True
        result.error = "timeout"
        return result
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    analyse(result, t0, pieces, expected)
    if not result.done and not result.error:
        result.error = "no end_turn"
    result.ok = not result.error
    return result


async def run_load(cfg: Config) -> dict[str, Any]:
    wall0 = time.monotonic()
    cpu0 = time.process_time()
    if cfg.target == "sdk":
        import anthropic
        import httpx2

        client = anthropic.AsyncAnthropic(
            api_key="bench",
            base_url=cfg.base_urls[0],
            max_retries=0,
            timeout=anthropic.Timeout(60.0, connect=10.0),
            http_client=anthropic.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=cfg.n + 10, max_keepalive_connections=cfg.n + 10)
            ),
        )
        async with client:
            warm = await one_sdk(cfg, client, -1)  # warm-up (index -1, not counted): SDK set-up
            cpu0, wall0 = time.process_time(), time.monotonic()
            results = await asyncio.gather(*(one_sdk(cfg, client, i) for i in range(cfg.n)))
    else:
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            warm = await one_http(cfg, session, -1)  # warm-up (index -1, not counted)
            cpu0, wall0 = time.process_time(), time.monotonic()
            results = await asyncio.gather(*(one_http(cfg, session, i) for i in range(cfg.n)))
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    latencies = sorted(v for r in results for v in r.latencies_ms)
    ttfts = sorted(r.ttft_added_ms for r in results if r.ttft_added_ms is not None)
    to_upstream = sorted(r.to_upstream_ms for r in results if r.to_upstream_ms is not None)
    streams = []
    for r in results:
        row = asdict(r)
        del row["latencies_ms"]
        streams.append(row)
    return {
        "target": cfg.target,
        "n": cfg.n,
        "deltas_expected": cfg.deltas * cfg.n,
        "deltas_received": len(latencies),
        "latency_ms": {q: percentile(latencies, float(q[1:])) for q in ("p50", "p95", "p99")}
        | {"max": latencies[-1] if latencies else None},
        "ttft_added_ms": {q: percentile(ttfts, float(q[1:])) for q in ("p50", "p95", "p99")},
        "to_upstream_ms": {q: percentile(to_upstream, float(q[1:])) for q in ("p50", "p95", "p99")},
        "ok": sum(r.ok for r in results),
        "errors": sum(not r.ok and not r.refused for r in results),
        "refused": sum(r.refused for r in results),
        # Streams read where they were started (several processes only): the rest crossed the channel layer.
        "same_process": sum(bool(r.same_process) for r in results if r.ok),
        "delta_events": sum(r.events for r in results),
        "delta_chars": sum(r.chars for r in results),
        # The warm-up stream ran on the server too (before the level's streams): /metrics counts it.
        "warmup": {"ok": warm.ok, "deltas": warm.deltas, "events": warm.events, "chars": warm.chars},
        "timeouts": sum(r.timeout for r in results),
        "error_kinds": sorted({r.error.split(":")[0] for r in results if r.error}),
        "client_cpu_s": cpu,
        "loadavg_1m": os.getloadavg()[0],
        "wall_s": wall,
        "streams": streams,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=["ours", "relay", "sdk"], required=True)
    parser.add_argument(
        "--base-url",
        required=True,
        help="the server (ours, relay) or the upstream (sdk); comma-separated: one per server process",
    )
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--deltas", type=int, default=600)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--ttft", type=float, default=0.0, help="the upstream's own time to first token (s)")
    parser.add_argument("--ramp", type=float, default=2.0, help="spread the N starts over this many seconds")
    parser.add_argument(
        "--grace", type=float, default=30.0, help="per-stream timeout beyond its nominal length"
    )
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--sessions", help="JSON file: a list of session keys (target ours)")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--routing", choices=ROUTINGS, default="cross", help="with several base URLs: see the docstring"
    )
    args = parser.parse_args(argv)
    raise_nofile_limit()
    sessions = json.loads(Path(args.sessions).read_text()) if args.sessions else []
    if args.target == "ours" and not sessions:
        parser.error("--sessions is required for target ours")
    cfg = Config(
        args.target,
        [url.rstrip("/") for url in args.base_url.split(",") if url],
        args.n,
        args.deltas,
        args.rate,
        args.ttft,
        args.ramp,
        args.grace,
        args.run_id,
        sessions,
        args.routing,
    )
    summary = asyncio.run(run_load(cfg))
    write_atomic(Path(args.out), json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
