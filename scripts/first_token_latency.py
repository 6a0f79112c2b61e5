"""Measure the time from the fake upstream writing its first token to an SSE client receiving it, through a
live daphne process running chatsite (SQLite, in-memory layer), over real loopback sockets.

    .venv/bin/python scripts/first_token_latency.py [--runs 20]

Both timestamps are time.time() on this machine: the fake records when it wrote the delta to its socket,
the client when the delta event was parsed. The upstream holds its first token until the client's stream
is open, and then waits for the client before sending more, so each run measures one token's trip:
SDK parse -> producer -> channel layer -> subscriber -> Django's handler -> daphne -> client."""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.live_client import LiveClient, sse_path
from tests.live_server import DaphneProcess, manage


async def measure(server: DaphneProcess, fake: FakeAnthropic, runs: int) -> list[float]:
    client = LiveClient()
    await client.login(server.url, "bench", "bench-password-123")
    samples: list[float] = []
    try:
        for i in range(runs + 1):  # run 0 warms up imports and connection pools; not counted
            fake.reset()
            subscribed, gate = threading.Event(), threading.Event()
            fake.enqueue(
                Wait(subscribed, timeout=30), Text("first"), Wait(gate, timeout=30), Text(" second"), End()
            )
            status, fragment = await client.post(server.url + "/c/start/", {"text": f"run {i}"})
            assert status == 200, fragment
            received_at = None
            opened = asyncio.get_running_loop().call_later(0.2, subscribed.set)  # the stream is open by then
            async for event in client.events(server.url + sse_path(fragment)):
                if event.event == "delta" and received_at is None:
                    received_at = time.time()
                    assert html.unescape(event.data) == "first"
                    gate.set()
                elif event.event == "done":
                    break
            opened.cancel()
            assert received_at is not None
            if i:
                samples.append((received_at - fake.sent[0][1]) * 1000)
    finally:
        await client.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic() as fake:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "ANTHROPIC_", "DATABASE_"))},
            "DATA_DIR": tmp,
            "DEBUG": "True",
            "CHAT_PROVIDER": "anthropic",
            "ANTHROPIC_API_KEY": "bench",
            "ANTHROPIC_BASE_URL": fake.url,
            "CHAT_UPSTREAM_MAX_RETRIES": "0",
            "LOG_LEVEL": "WARNING",
        }
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.create_user('bench', password='bench-password-123')",
        )
        server = DaphneProcess(env, Path(tmp), "first-token").start()
        try:
            samples = asyncio.run(measure(server, fake, args.runs))
        finally:
            server.stop()
    samples.sort()
    print(f"first token, upstream write -> client receive, {len(samples)} runs (ms):")
    print(
        f"  median {statistics.median(samples):.2f}  min {samples[0]:.2f}  max {samples[-1]:.2f}  "
        f"p90 {samples[int(0.9 * (len(samples) - 1))]:.2f}"
    )
    print("  all: " + ", ".join(f"{s:.2f}" for s in samples))


if __name__ == "__main__":
    main()
