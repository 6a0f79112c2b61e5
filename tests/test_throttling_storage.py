"""The in-memory rate-limit storage (chat.throttling.SweptMemoryStorage): counting as limits' own, with no
thread started per hit, and expired entries still swept (by the caller, at most every `sweep_seconds`).
The end-to-end limits (a clear refusal, nothing saved) are in test_security.py."""

from __future__ import annotations

import threading

from limits import RateLimitItemPerMinute
from limits.storage.memory import Entry
from limits.strategies import MovingWindowRateLimiter

from chat.throttling import SweptMemoryStorage


def test_a_moving_window_allows_its_amount_then_refuses() -> None:
    limiter = MovingWindowRateLimiter(SweptMemoryStorage())
    item = RateLimitItemPerMinute(3)
    assert [limiter.hit(item, "messages", "1") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(item, "messages", "2")  # another user's window
    stats = limiter.get_window_stats(item, "messages", "1")
    assert stats.remaining == 0 and stats.reset_time > 0


def test_hits_start_no_thread() -> None:
    """limits' MemoryStorage starts a new 10 ms `threading.Timer` on each hit once the last one has run."""
    storage = SweptMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(100)
    first = storage.timer  # the one MemoryStorage starts when it is built
    first.join()
    before = {thread.ident for thread in threading.enumerate()}
    for user in range(50):
        assert limiter.hit(item, "messages", str(user))
    assert storage.timer is first
    assert {thread.ident for thread in threading.enumerate()} <= before


def test_expired_entries_are_swept_by_a_later_hit_when_due() -> None:
    storage = SweptMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(100)
    storage.events["stale"] = [Entry(-1)]  # an entry that expired a second ago
    assert limiter.hit(item, "messages", "1")
    assert len(storage.events["stale"]) == 1  # not due yet: the last sweep is less than sweep_seconds old
    storage.sweep_seconds = 0
    assert limiter.hit(item, "messages", "1")
    assert not storage.events.get("stale")  # limits keeps the emptied key; its entries are gone
    assert len(storage.events[item.key_for("messages", "1")]) == 2  # the live window is kept
