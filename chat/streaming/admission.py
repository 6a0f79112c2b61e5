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

A leaf module: it imports nothing of ours."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

__all__ = ["Slot", "active", "claim", "holding", "refusals", "reserve"]

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
