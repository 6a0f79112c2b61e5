"""Bounded waits for tests that drive real processes: they poll for an observable fact, and fail with what
was awaited once a generous bound has passed. They assert that something happens, never how fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

BOUND = 30.0


async def until(condition: Callable[[], bool], what: str, timeout: float = BOUND) -> float:
    """Poll until `condition()` holds; how long it took. Fails after `timeout` seconds."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.01)
    return time.monotonic() - started
