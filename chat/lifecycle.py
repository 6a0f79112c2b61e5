"""Background work owned by a server process: running generations and the reaper of dead ones."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from django.conf import settings

from chat import flusher, pubsub, services
from chat.db import background_db

logger = logging.getLogger(__name__)

_tasks: set[asyncio.Task[Any]] = set()
_reaper: asyncio.Task[None] | None = None

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def spawn(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    """Run `coro` detached from the current request: a fresh context (so it does not inherit the request's
    thread-sensitive executor, which closes with the request) and a strong reference until it ends."""
    task = asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task %s failed", task.get_name(), exc_info=task.exception())


def start_reply(reply_id: int) -> asyncio.Task[Any]:
    from chat.producer import produce_reply

    ensure_reaper()
    return spawn(produce_reply(reply_id), name=f"reply-{reply_id}")


def running_tasks() -> set[asyncio.Task[Any]]:
    return set(_tasks)


_reap = background_db(services.replies_reap_expired)


async def reap_once() -> list[int]:
    """Mark replies whose producer died as interrupted, and tell their subscribers."""
    ids = await _reap(exclude=flusher.local_ids())
    for reply_id in ids:
        logger.warning("reply %s: its process stopped renewing the lease; marked interrupted", reply_id)
        await pubsub.publish_end(reply_id)
    return ids


async def _reap_forever() -> None:
    # Worst case from a process's death to "interrupted": the lease plus one reaper interval.
    interval = settings.CHAT_LEASE_SECONDS / 2
    while True:
        try:
            await reap_once()
        except Exception:  # the database may be briefly away; try again next round
            logger.exception("reaper round failed")
        await asyncio.sleep(interval)


def ensure_reaper() -> None:
    global _reaper
    if _reaper is None or _reaper.done():
        _reaper = spawn(_reap_forever(), name="reaper")


def with_background_tasks(app: ASGIApp) -> ASGIApp:
    """Wrap the ASGI app so each server process starts its reaper with its first request (daphne has no
    lifespan events)."""

    async def wrapped(
        scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] == "http":
            ensure_reaper()
        await app(scope, receive, send)

    return wrapped
