"""Database access on long-lived threads: the engine's background work (producers, subscribers, the
reaper), and the requests that start or open a reply.

Both run on small dedicated thread pools instead of channels' `database_sync_to_async`, which opens and
closes a connection around every call (measured: a third of the server's CPU under load) and, inside a
request, gives every request its own new thread (asgiref's per-request executor). With SQLite a new
connection is the costly part (open, WAL and synchronous pragmas, Django's function registration:
`get_new_connection`, `register` and `_close` were 4-6% of the server's samples at N=50, see
docs/notes/perf.md), so SQLite connections stay open on these threads.

- `background_db`: the engine's writes and loads. Connections stay open. With SQLite one thread
  serialises the writes (SQLite allows one writer anyway); PostgreSQL gets up to four, never more than half
  the connection pool.
- `request_db`: a request's own reads and writes (services' and selectors' async twins, the page's
  render). A separate pool, so a start never queues behind the flusher's batch saves. SQLite: two threads
  (WAL lets the second read while the first writes), connections kept. PostgreSQL: up to four threads,
  and each call gives its connection back at the end (to the pool, when pooling is on), as
  `database_sync_to_async` did, so requests never hold pool slots between calls.

Functions run here with no request context (`loop.run_in_executor` copies no context variables): they take
what they need as arguments. A connection that fails is closed, so the next call opens a fresh one."""

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

_executors: dict[str, ThreadPoolExecutor] = {}


def _is_sqlite() -> bool:
    return bool(settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"))


def _pool_max() -> int:
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    return pool.get("max_size", 4) if isinstance(pool, dict) else 4


# Threads per pool with SQLite (one writer at a time anyway; the request pool's second thread reads while
# the first writes, under WAL). PostgreSQL: each pool up to four, never more than half the connection pool.
_SQLITE_WORKERS = {"background": 1, "request": 2}


def _pool(kind: str) -> ThreadPoolExecutor:
    executor = _executors.get(kind)
    if executor is None:
        workers = _SQLITE_WORKERS[kind] if _is_sqlite() else max(1, min(4, _pool_max() // 2))
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"chat-{kind}")
        _executors[kind] = executor
    return executor


def _call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return fn(*args, **kwargs)
    except Error:
        connection.close()  # a broken or aborted connection is not reused
        raise


def _call_and_release(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return _call(fn, *args, **kwargs)
    finally:
        if not _is_sqlite():
            connection.close()  # back to the pool (PostgreSQL): no slot is held between calls


def _on_threads(kind: str, call: Callable[..., R], fn: Callable[P, R]) -> Callable[P, Any]:
    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_pool(kind), functools.partial(call, fn, *args, **kwargs))

    return run


def background_db(fn: Callable[P, R]) -> Callable[P, Any]:
    """Make a sync ORM function awaitable on the background database threads."""
    return _on_threads("background", _call, fn)


def request_db(fn: Callable[P, R]) -> Callable[P, Any]:
    """Make a sync function awaitable on the request database threads (see the module's docstring): for
    a request's ORM work and renders, in place of `database_sync_to_async` / `sync_to_async`."""
    return _on_threads("request", _call_and_release, fn)
