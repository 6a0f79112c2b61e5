"""Per-process limits on the stream path: open streams per user, and one final rendering per reply.

- `open_stream_slot`: each open SSE response holds one of its user's CHAT_MAX_STREAMS_PER_USER slots in
  this process; the view answers 429 when none is free. The slot is given back by the response's
  `close()`, which Django calls when the response ends, however it ends (done, disconnect, error).
- `FinalRenders`: the final HTML of a finished reply is rendered once and shared by every subscriber
  that asks for the same finished version within a short time (all of them ask at `end`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from django.conf import settings

_open: dict[int, int] = {}  # user id -> open streams in this process


class StreamSlot:
    """An async iterable of SSE frames that holds one of its user's stream slots until `close()`.
    Django's StreamingHttpResponse registers the `close` of its content and calls it when it ends."""

    def __init__(self, user_id: int, frames: AsyncIterator[bytes]) -> None:
        self.user_id = user_id
        self.frames = frames
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.frames

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        left = _open.get(self.user_id, 1) - 1
        if left > 0:
            _open[self.user_id] = left
        else:
            _open.pop(self.user_id, None)


def open_stream_slot(user_id: int, frames: AsyncIterator[bytes]) -> StreamSlot | None:
    """`frames` holding a slot of `user_id`'s, or None when all CHAT_MAX_STREAMS_PER_USER are taken."""
    if _open.get(user_id, 0) >= settings.CHAT_MAX_STREAMS_PER_USER:
        return None
    _open[user_id] = _open.get(user_id, 0) + 1
    return StreamSlot(user_id, frames)


def open_streams(user_id: int) -> int:
    return _open.get(user_id, 0)


FinalKey = tuple[int, datetime | None, int]  # reply id, when it finished, its length


class FinalRenders:
    """Single-flight, short-lived cache of finished replies' final HTML. A reply that is continued and
    finishes again has a new `finished_at`, so a new key: a stale rendering is never served.
    `renders` counts the renderings actually made (observable by tests and benchmarks)."""

    TTL = 30.0

    def __init__(self) -> None:
        self.renders = 0
        self._done: dict[FinalKey, tuple[float, str | None]] = {}
        self._pending: dict[FinalKey, asyncio.Task[str | None]] = {}

    async def get(self, key: FinalKey, render: Callable[[], Awaitable[str | None]]) -> str | None:
        now = time.monotonic()
        cached = self._done.get(key)
        if cached is not None and now - cached[0] < self.TTL:
            return cached[1]
        task = self._pending.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._render(key, render))
            self._pending[key] = task
        # Shielded: one subscriber leaving must not cancel the rendering the others wait for.
        return await asyncio.shield(task)

    async def _render(self, key: FinalKey, render: Callable[[], Awaitable[str | None]]) -> str | None:
        try:
            self.renders += 1
            html = await render()
            now = time.monotonic()
            for old in [k for k, (at, _) in self._done.items() if now - at >= self.TTL]:
                del self._done[old]
            self._done[key] = (now, html)
            return html
        finally:
            self._pending.pop(key, None)


final_renders = FinalRenders()
