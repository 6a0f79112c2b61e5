"""Abuse limits that are not login throttling (django-axes does that): sign-ups per client address and
messages per user, counted by the `limits` library in a moving window. The counters live in this process's
memory, or in Redis when RATE_LIMIT_STORAGE_URL (by default REDIS_URL) names it, so that several server
processes count against one limit."""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter


class SweptMemoryStorage(MemoryStorage):
    """limits' in-memory storage, its expired entries swept at most every `sweep_seconds`, by the caller.

    MemoryStorage sweeps from a `threading.Timer` of 10 ms, started again by every hit that finds the last
    one finished, and each sweep walks every key. Measured (issue 15; 200 users' keys, one message every
    20 ms, about the bench's start rate at N=50; the process's CPU per message): 1.13-1.15 ms and a new
    thread each time, against 0.18-0.19 ms here (of which a 20 ms sleep's own cold caches are ~0.08), in
    the commit of every new message, on the first token's path; and the walk grows with the users.
    The sweep only frees memory: a moving window counts just the entries inside it, and a fixed window's
    counter is dropped when it is next read after its expiry, whatever the sweep has done."""

    sweep_seconds = 10.0

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri, **options)
        self._swept_at = time.monotonic()
        self._sweeping = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:
        """Called by MemoryStorage before each hit (its private hook, hence the name): sweep here if due."""
        now = time.monotonic()
        if now - self._swept_at < self.sweep_seconds or not self._sweeping.acquire(blocking=False):
            return
        try:
            self._swept_at = now
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]
        finally:
            self._sweeping.release()


@functools.cache
def _limiter() -> MovingWindowRateLimiter:
    url = settings.RATE_LIMIT_STORAGE_URL
    storage: Storage
    if url == "memory://":
        storage = SweptMemoryStorage()
    else:
        storage = storage_from_string(url)  # type: ignore[assignment]
    return MovingWindowRateLimiter(storage)


@receiver(setting_changed)
def _storage_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "RATE_LIMIT_STORAGE_URL":
        _limiter.cache_clear()


def reset() -> None:
    """Forget every counter (tests; an operator lifting a limit by hand)."""
    _limiter().storage.reset()


@dataclass(frozen=True)
class Refusal:
    """A request over its limit: how many were allowed, and when the next one will be."""

    limit: int
    retry_after: int  # seconds, at least 1

    @property
    def wait_minutes(self) -> int:
        return math.ceil(self.retry_after / 60)

    @property
    def wait_text(self) -> str:
        if self.retry_after < 90:
            return f"{self.retry_after} second{'s' if self.retry_after != 1 else ''}"
        minutes = math.ceil(self.retry_after / 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _hit(item: RateLimitItem, *identifiers: str) -> Refusal | None:
    """Count one more request; a Refusal (and no count) when the window is already full."""
    limiter = _limiter()
    if limiter.hit(item, *identifiers):
        return None
    stats = limiter.get_window_stats(item, *identifiers)
    return Refusal(limit=item.amount, retry_after=max(1, math.ceil(stats.reset_time - time.time())))


def message_hit(*, user_id: int) -> Refusal | None:
    """One message (or retry, or continue) by this user: each starts a paid generation."""
    return _hit(RateLimitItemPerMinute(settings.CHAT_MESSAGES_PER_MINUTE), "messages", str(user_id))


def signup_hit(*, client: str) -> Refusal | None:
    return _hit(RateLimitItemPerHour(settings.SIGNUPS_PER_IP_PER_HOUR), "signups", client)


def password_change_hit(*, user_id: int) -> Refusal | None:
    """Each password change POST checks the old password, a password hash: as many as logins allow
    failures, per lockout time."""
    item = RateLimitItemPerMinute(settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_LOCKOUT_MINUTES)
    return _hit(item, "password-changes", str(user_id))


def client_ip(request: HttpRequest) -> str | None:
    """The client's address (also django-axes' AXES_CLIENT_IP_CALLABLE), or None when there is none (a
    request built in code). Behind the documented nginx, daphne's --proxy-headers has already set
    REMOTE_ADDR from the X-Forwarded-For header nginx overwrites with the address it saw; with no proxy, it
    is the peer's address. Never read X-Forwarded-For here: a client could write anything in it."""
    return request.META.get("REMOTE_ADDR") or None


def too_many_attempts(request: HttpRequest, *, what: str, minutes: int) -> HttpResponse:
    """The page a throttled sign-up or login gets: 429, and when to try again."""
    response = render(
        request,
        "registration/too_many_attempts.html",
        {"what": what, "minutes": minutes},
        status=429,
    )
    response["Retry-After"] = str(minutes * 60)
    return response


def throttle_signups(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Count each sign-up POST against the client address; refuse the ones over the hourly limit before
    the form (and its password hashing) runs."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if request.method == "POST":
            refusal = signup_hit(client=client_ip(request) or "unknown")
            if refusal is not None:
                return too_many_attempts(request, what="sign-up attempts", minutes=refusal.wait_minutes)
        return view(request, *args, **kwargs)

    return wrapper


def throttle_password_changes(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Count each password change POST against the signed-in user; refuse the ones over the limit before
    the old password is checked. Anonymous requests pass through (the view sends them to log in)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponseBase:
        if request.method == "POST" and request.user.is_authenticated:
            refusal = password_change_hit(user_id=request.user.pk)
            if refusal is not None:
                return too_many_attempts(
                    request, what="password change attempts", minutes=refusal.wait_minutes
                )
        return view(request, *args, **kwargs)

    return wrapper
