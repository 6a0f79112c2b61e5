"""Detached background tasks owned by this server process (generations, the reaper, the flusher).

A leaf module: everything else in the engine may import it, and it imports nothing of ours."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)

_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    """Run `coro` detached from the current request: a fresh context (so it does not inherit the request's
    thread-sensitive executor, which closes with the request) and a strong reference until it ends."""
    task = asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    task.add_done_callback(_log_failure)
    return task


def running_tasks() -> set[asyncio.Task[Any]]:
    return set(_tasks)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task %s failed", task.get_name(), exc_info=task.exception())
