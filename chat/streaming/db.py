"""Database access for the long-lived background work (producers, subscribers, the reaper).

All of it runs on a small dedicated thread pool whose connections stay open, instead of channels'
`database_sync_to_async`, which opens and closes a connection around every call (measured: a third of the
server's CPU under load) and, inside a request, gives every open stream its own executor thread. A
connection that fails is closed, so the next call opens a fresh one. With SQLite one thread serialises
the writes (SQLite allows one writer anyway); PostgreSQL gets up to four, never more than half the
connection pool."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import Error, connection

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        database = settings.DATABASES["default"]
        if database["ENGINE"].endswith("sqlite3"):
            workers = 1
        else:  # each thread keeps a pooled connection: leave at least half the pool to requests
            pool = database.get("OPTIONS", {}).get("pool")
            pool_max = pool.get("max_size", 4) if isinstance(pool, dict) else 4
            workers = max(1, min(4, pool_max // 2))
        _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chat-db")
    return _executor


def _call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return fn(*args, **kwargs)
    except Error:
        connection.close()  # a broken or aborted connection is not reused
        raise


def background_db(fn: Callable[P, R]) -> Callable[P, Any]:
    """Make a sync ORM function awaitable on the background database threads."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_pool(), functools.partial(_call, fn, *args, **kwargs))

    return run
