"""Background work owned by a server process: running generations, the reaper of dead ones, and the drain
that ends them well when the process is asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chat.streaming import admission, flusher, metrics, pubsub
from chat.streaming.producer import Loaded, produce_reply
from chat.streaming.store import areplies_reap_expired
from chat.streaming.tasks import running_tasks, spawn

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

# The ASGI scope key holding when a request arrived (time.monotonic()); see `with_background_tasks`.
REQUEST_ARRIVED = "chat.arrived_at"
# How long the replies still running when a drain ends may take to save themselves as interrupted.
FINAL_SAVE_SECONDS = 10.0
# How long a start waits for its reply's upstream request before answering anyway (see `astart_reply`).
START_WAIT_SECONDS = 1.0

_reaper: asyncio.Task[None] | None = None
_replies: set[asyncio.Task[Any]] = set()  # this process's running generations
_draining = False

__all__ = [
    "REQUEST_ARRIVED",
    "DrainReport",
    "astart_reply",
    "drain",
    "ensure_reaper",
    "is_draining",
    "reap_once",
    "running_tasks",
    "start_reply",
    "with_background_tasks",
]


def start_reply(
    reply_id: int, *, requesting: asyncio.Future[None] | None = None, prepared: Loaded | None = None
) -> asyncio.Task[Any]:
    """Generate reply `reply_id` (a committed STREAMING row) in this process, detached from the request.
    Views check `is_draining()` first; a reply whose row was committed before the drain began still runs
    here, and the drain waits for it like any other. The task takes over the admission slot the request
    reserved (see `admission`) and gives it back when it ends, however it ends. `requesting`: see
    `astart_reply`. `prepared`: the reply's `prepare_reply`, when the caller built it with the commit."""
    ensure_reaper()
    task = spawn(produce_reply(reply_id, requesting=requesting, prepared=prepared), name=f"reply-{reply_id}")
    slot = admission.claim()  # after spawn: if that failed, the request's slot is still given back
    if slot.requested_at is not None:
        metrics.reply_requested(reply_id, slot.requested_at)
    _replies.add(task)

    def ended(task: asyncio.Task[Any]) -> None:
        _replies.discard(task)
        slot.release()
        metrics.forget(reply_id)

    task.add_done_callback(ended)
    return task


async def astart_reply(
    reply_id: int, *, prepared: Loaded | None = None, wait: float = START_WAIT_SECONDS
) -> asyncio.Task[Any]:
    """`start_reply`, then wait (at most `wait` seconds) until the reply's first upstream request has left:
    its row and history loaded, the request built and written (the producer's `_sending`). The view renders
    its answer after that.

    Why: the render (10-20 ms of CPU for a new conversation's pane) and the reply's start (its load and
    the SDK's request) both need the GIL; run side by side, the render delayed the upstream request, which
    is on the first token's path, while the page's answer is not (the stream catches up by offset). The
    wait is bounded, so a slow database never holds the page back for long."""
    requesting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = start_reply(reply_id, requesting=requesting, prepared=prepared)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            await requesting
    return task


def is_draining() -> bool:
    """True once this process has begun to shut down: it accepts no new replies (views answer 503)."""
    return _draining


@dataclass(frozen=True)
class DrainReport:
    finished: int  # replies that ended on their own during the drain
    interrupted: int  # replies still running at the deadline: stopped, saved as interrupted
    seconds: float  # how long the drain took


async def drain(*, seconds: float) -> DrainReport:
    """Shut this process's replies down well. From now on `is_draining()` is True, so views refuse new
    replies. Running replies get up to `seconds` to finish; each one still running then is cancelled, which
    makes its producer save the partial as interrupted ("The server restarted…", Continue offered) and
    publish `end`, so followers on other processes show it at once. Returns when every reply is saved, or
    FINAL_SAVE_SECONDS after the deadline at the latest (the lease reaper elsewhere covers what is left)."""
    global _draining
    _draining = True
    started = time.monotonic()
    deadline = started + seconds
    logger.warning("draining: %d replies running, new ones refused, for up to %.0fs", len(_replies), seconds)
    finished = 0
    # Re-read the set each time: a message committed just before the drain began may start a reply after it.
    while _replies and (remaining := deadline - time.monotonic()) > 0:
        done, _ = await asyncio.wait(set(_replies), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finished += len(done)
    left = set(_replies)
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left, timeout=FINAL_SAVE_SECONDS)
    report = DrainReport(finished=finished, interrupted=len(left), seconds=time.monotonic() - started)
    logger.warning(
        "drained in %.1fs: %d replies finished, %d saved as interrupted",
        report.seconds,
        report.finished,
        report.interrupted,
    )
    return report


async def reap_once() -> list[int]:
    """Mark replies whose producer died as interrupted, and tell their subscribers."""
    ids = await areplies_reap_expired(exclude=flusher.local_ids())
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
            # When the request arrived, before any middleware: where the first-token time `added` starts.
            scope.setdefault(REQUEST_ARRIVED, time.monotonic())
            ensure_reaper()
        await app(scope, receive, send)

    return wrapped
