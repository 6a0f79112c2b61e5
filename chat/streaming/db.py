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
- `start_db`: the request pool, served first. For what stands between a new message and its reply's
  upstream request (the commit of the exchange, a reply's load): under load these trips queue, and a
  page's render or a stream's open, which have the model's own time to first token to spare, wait instead.

Functions run here with no request context (the threads get no context variables): they take what they
need as arguments. A connection that fails is closed, so the next call opens a fresh one."""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import Error, connection

P = ParamSpec("P")
R = TypeVar("R")

_pools: dict[str, ThreadPool] = {}


def _is_sqlite() -> bool:
    return bool(settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"))


def _pool_max() -> int:
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    return pool.get("max_size", 4) if isinstance(pool, dict) else 4


# Threads per pool with SQLite (one writer at a time anyway; the request pool's second thread reads while
# the first writes, under WAL). PostgreSQL: each pool up to four, never more than half the connection pool.
_SQLITE_WORKERS = {"background": 1, "request": 2}


# (loop, future, fn, submitted: perf_counter at submit)
_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any], float]


@dataclass(frozen=True)
class PoolStats:
    """A pool's calls since the process started: how many ran, their total wait for a thread (submitted
    to started), their total time running (wall clock) and the CPU time their threads spent on them.

    Why both clocks: a call's thread runs Python only while it holds the GIL, and gives it up at every
    SQLite or network call. When the event loop is busy, each give-up costs the thread up to the
    interpreter's switch interval (5 ms) to win the GIL back. Measured (session 14, bench N=100, ramped
    starts): a new conversation's commit, ~3 ms of CPU, ran 14-52 ms of wall time late in the ramp, and
    the calls behind it waited 30-71 ms for a thread. Running time well above CPU time means the process
    is short of CPU, not of threads or database."""

    calls: int = 0
    wait_seconds: float = 0.0
    run_seconds: float = 0.0
    cpu_seconds: float = 0.0


class ThreadPool:
    """Up to `workers` threads (started as needed, then kept with their database connections) running
    calls for an event loop: first every call submitted with `first=True`, then the others, each kind in
    the order submitted.

    Why not a ThreadPoolExecutor: its queue is first come, first served. Measured (issue 15, bench N=100,
    ramped starts, a throwaway per-start trace): the commit of a new message waited 100-300 ms for a
    request thread behind the renders and stream opens of the starts before it, and that wait was most of
    the time its reply's request took to reach the model."""

    def __init__(self, *, workers: int, name: str) -> None:
        self._workers = workers
        self._name = name
        self._first: collections.deque[_Call] = collections.deque()
        self._rest: collections.deque[_Call] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._threads = 0
        self._idle = 0
        self._stats = PoolStats()

    @property
    def workers(self) -> int:
        return self._workers

    def waiting(self) -> int:
        """How many calls wait for a thread."""
        with self._ready:
            return len(self._first) + len(self._rest)

    def stats(self) -> PoolStats:
        """The calls run so far (see PoolStats)."""
        with self._ready:
            return self._stats

    def submit(self, fn: Callable[[], R], *, first: bool = False) -> asyncio.Future[R]:
        """Run `fn()` on a thread of the pool; its result (or exception) comes back on the current loop.
        Cancelling the future skips a call that has not started, and leaves one that has to finish."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        with self._ready:
            (self._first if first else self._rest).append((loop, future, fn, time.perf_counter()))
            if self._idle:  # counted down here, not when it wakes: a burst then starts further threads
                self._idle -= 1
                self._ready.notify()
            elif self._threads < self._workers:
                self._threads += 1
                name = f"{self._name}_{self._threads - 1}"
                # A daemon: nothing waits for it at exit. Nothing needs to: a server process drains its
                # replies, final saves included, before it stops (chatsite.asgi).
                threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    def _work(self) -> None:
        ran: tuple[float, float, float] | None = None  # the last call's wait, run and CPU seconds
        while True:
            with self._ready:
                if ran is not None:  # counted under the lock the pool takes anyway
                    stats = self._stats
                    self._stats = PoolStats(
                        stats.calls + 1,
                        stats.wait_seconds + ran[0],
                        stats.run_seconds + ran[1],
                        stats.cpu_seconds + ran[2],
                    )
                    ran = None
                while not (self._first or self._rest):
                    self._idle += 1
                    self._ready.wait()
                loop, future, fn, submitted = (self._first or self._rest).popleft()
            if future.cancelled():  # its caller is gone (a read of a flag the loop set; no lock needed)
                continue
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                outcome = functools.partial(_set_result, future, fn())
            except BaseException as exc:
                outcome = functools.partial(_set_exception, future, exc)
            ran = (started - submitted, time.perf_counter() - started, time.thread_time() - cpu)
            try:
                loop.call_soon_threadsafe(outcome)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass
            del outcome, future, fn  # a finished call's result is not kept alive until the next call


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.cancelled():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)


def pool(kind: str) -> ThreadPool:
    """The pool behind `background_db` ("background") or `request_db` and `start_db` ("request")."""
    found = _pools.get(kind)
    if found is None:
        workers = _SQLITE_WORKERS[kind] if _is_sqlite() else max(1, min(4, _pool_max() // 2))
        found = _pools[kind] = ThreadPool(workers=workers, name=f"chat-{kind}")
    return found


def waiting() -> dict[str, int]:
    """Calls waiting for a thread, by pool (only the pools this process has started)."""
    return {kind: found.waiting() for kind, found in sorted(_pools.items())}


def stats() -> dict[str, PoolStats]:
    """Calls run so far, by pool (only the pools this process has started)."""
    return {kind: found.stats() for kind, found in sorted(_pools.items())}


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


def _on_threads(
    kind: str, call: Callable[..., R], fn: Callable[P, R], *, first: bool = False
) -> Callable[P, Any]:
    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await pool(kind).submit(functools.partial(call, fn, *args, **kwargs), first=first)

    return run


def background_db(fn: Callable[P, R]) -> Callable[P, Any]:
    """Make a sync ORM function awaitable on the background database threads."""
    return _on_threads("background", _call, fn)


def request_db(fn: Callable[P, R]) -> Callable[P, Any]:
    """Make a sync function awaitable on the request database threads (see the module's docstring): for
    a request's ORM work and renders, in place of `database_sync_to_async` / `sync_to_async`."""
    return _on_threads("request", _call_and_release, fn)


def start_db(fn: Callable[P, R]) -> Callable[P, Any]:
    """`request_db`, served before every other call waiting for the request threads: for the work that
    stands between a new message and its reply's upstream request (see the module's docstring)."""
    return _on_threads("request", _call_and_release, fn, first=True)
