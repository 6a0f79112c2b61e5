"""Admission control: at most CHAT_MAX_ACTIVE_REPLIES replies generate at once in this server process.

Past the bound a new reply is refused at once, before any database work, and nothing is saved: the view
answers 503 with Retry-After (CHAT_BUSY_RETRY_AFTER). Running replies are untouched. The bound protects
the replies already streaming: each costs CPU per delta on this process's one event loop, and past what
the loop can carry every stream's latency grows together (README, "Operations: capacity, metrics and
health", says how the default was derived).

A slot's life, and its invariant — every reserved slot is released exactly once:
- `reserve()` takes a slot (or refuses) atomically, before the view opens its transaction;
- `holding(slot)` makes it the pending slot of the current context while the view runs; `claim()` (called
  by `lifecycle.start_reply`) hands it to the generation task, which releases it when it ends, however
  it ends (complete, stopped, error, drain);
- a slot that no task claimed (validation error, budget refusal, database error, any exception) is
  given back when `holding` exits.

Within the bound, `starting()` lets at most CHAT_MAX_CONCURRENT_STARTS starts do their work at once on an
event loop (the commit, the reply's start, the answer's render); the rest wait their turn, in order.

A leaf module: it imports nothing of ours."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from django.conf import settings

__all__ = ["Slot", "active", "claim", "holding", "refusals", "reserve", "starting", "starts_waiting"]

# A lock, not the event loop's single thread, makes check-and-take atomic: a start may come from a thread
# (a sync view, a management command), and the lock costs ~100 ns once per start, never per delta.
_lock = threading.Lock()
_active = 0  # slots reserved in this process: replies starting or generating
_refusals = 0  # starts refused since this process started


class Slot:
    """One reserved place among this process's active replies. `requested_at` (time.monotonic()) is when
    the request that reserved it arrived; None for a reply started without a request."""

    __slots__ = ("claimed", "released", "requested_at")

    def __init__(self, requested_at: float | None) -> None:
        self.requested_at = requested_at
        self.claimed = False  # handed to a generation task, which releases it when it ends
        self.released = False

    def release(self) -> None:
        """Give the slot back; idempotent."""
        global _active
        with _lock:
            if self.released:
                return
            self.released = True
            _active -= 1


_pending: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("pending_reply_slot", default=None)


def reserve(*, requested_at: float | None = None, force: bool = False) -> Slot | None:
    """A slot, or None (and one more refusal counted) when CHAT_MAX_ACTIVE_REPLIES are taken (0: no
    bound). `requested_at`: when the request arrived (time.monotonic()), for the first-token metric.
    `force`: take one past the bound (a reply started without a request still counts)."""
    global _active, _refusals
    bound = settings.CHAT_MAX_ACTIVE_REPLIES
    with _lock:
        if bound > 0 and _active >= bound and not force:
            _refusals += 1
            return None
        _active += 1
    return Slot(requested_at)


@contextmanager
def holding(slot: Slot) -> Iterator[Slot]:
    """Within this block `slot` is the one `claim()` hands to the reply started here; at its end a slot no
    reply claimed is given back (the start failed or refused, however)."""
    token = _pending.set(slot)
    try:
        yield slot
    finally:
        _pending.reset(token)
        if not slot.claimed:
            slot.release()


def claim() -> Slot:
    """The slot the current request reserved, now owned by the caller (a reply's generation task); or, for
    a reply started outside `holding`, a slot taken past the bound so that it is counted all the same."""
    slot = _pending.get()
    if slot is None or slot.claimed or slot.released:
        slot = reserve(force=True)
        assert slot is not None
    slot.claimed = True
    return slot


def active() -> int:
    """Replies starting or generating in this process (what the bound counts)."""
    return _active


def refusals() -> int:
    return _refusals


# --- Starts at once ------------------------------------------------------------------------------------
# Per event loop (an asyncio.Semaphore belongs to the loop that first waits on it), with the bound it was
# made for: a changed setting (tests) gets a new one.
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)
_waiting = 0  # starts waiting in `starting()` on every loop of this process


@asynccontextmanager
async def starting() -> AsyncIterator[None]:
    """Hold one of this event loop's CHAT_MAX_CONCURRENT_STARTS places for a start's own work (0: no
    bound); a start past them waits here, first come first served, and a start whose request goes away
    while it waits leaves the queue without having done anything.

    Why: a start costs far more CPU than a delta (about 13 ms against 0.1-0.2 ms, issue 15's twentieth
    session), spread over the event loop and the request database threads, which take the GIL from the
    loop. With every arriving start in progress at once, a burst of them (the bench's N=250: 125 a second)
    keeps the database threads busy and fills the loop's queue ahead of the running streams' deltas: per-
    delta p99 78-130 ms (up to 470). With two at once, the same burst queued here and the deltas went on:
    p99 19-44 ms, three runs each way. Starts are not slower one by one; in a burst the last ones wait
    longer for their first token instead of every stream stuttering."""
    bound = settings.CHAT_MAX_CONCURRENT_STARTS
    if bound <= 0:
        yield
        return
    global _waiting
    loop = asyncio.get_running_loop()
    made = _gates.get(loop)
    if made is None or made[0] != bound:
        made = _gates[loop] = (bound, asyncio.Semaphore(bound))
    gate = made[1]
    _waiting += 1
    try:
        await gate.acquire()
    finally:
        _waiting -= 1
    try:
        yield
    finally:
        gate.release()


def starts_waiting() -> int:
    """Starts waiting for a place in `starting()` (every event loop of this process)."""
    return _waiting
