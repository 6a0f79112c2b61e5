"""Small response policies that no library covers: no shared caching of anything dynamic, and renewal of
the idle session timeout."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.cache import patch_cache_control
from django.utils.decorators import sync_and_async_middleware
from django.utils.deprecation import MiddlewareMixin

from chat.middleware_inline import InlineHooks

# The session's expiry is renewed when it was last renewed this long ago or more: one session write a minute
# at most, not one per request. So a session ends between SESSION_IDLE_MINUTES - 1 and SESSION_IDLE_MINUTES
# after the last request.
RENEW_EVERY_SECONDS = 60
LAST_SEEN_KEY = "_idle_last_renewed"

Handler = Callable[[HttpRequest], HttpResponseBase]
AsyncHandler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


@sync_and_async_middleware
def private_no_store(get_response: Handler | AsyncHandler) -> Handler | AsyncHandler:
    """`Cache-Control: private, no-store` on every page, stream and export (static files never get here:
    ServeStatic answers them first). Pages hold a user's conversations or a CSRF token; no proxy or
    browser cache may keep them. A response whose view chose a private policy itself keeps it (an
    attachment's file: private, cached an hour by that user's browser only)."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            response = await get_response(request)
            _private_no_store(response)
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        _private_no_store(response)  # type: ignore[arg-type]
        return response  # type: ignore[return-value]

    return middleware


def _private_no_store(response: HttpResponseBase) -> None:
    if "private" not in response.get("Cache-Control", ""):
        patch_cache_control(response, private=True, no_store=True)


class SessionIdleRenewalMiddleware(InlineHooks, MiddlewareMixin):
    """Sessions expire SESSION_COOKIE_AGE (= SESSION_IDLE_MINUTES) after they were last saved; Django checks
    that expiry on every request. A signed-in request renews it by saving the session, at most once a
    minute. Event streams never do: they hold no database connection while they stream.

    Under ASGI the check runs on the event loop when the request loaded its session already (every signed-in
    view does) or has none; only an unloaded session is read in the request's thread. SessionMiddleware
    saves it."""

    async def aprocess_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        session = getattr(request, "session", None)
        # No session cookie (a probe, a stranger): nothing to read, so nothing to renew; the check below
        # then costs no read either. (It hopped to a thread: ~0.8 ms of CPU per request.)
        if (
            session is None
            or response.streaming
            or hasattr(session, "_session_cache")
            or session.session_key is None
        ):
            return self.process_response(request, response)
        return await sync_to_async(self.process_response)(request, response)

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        session = getattr(request, "session", None)
        if session is None or response.streaming or SESSION_KEY not in session:
            return response
        now = int(time.time())
        last = session.get(LAST_SEEN_KEY)
        if not isinstance(last, int) or now - last >= RENEW_EVERY_SECONDS:
            session[LAST_SEEN_KEY] = now  # marks it modified: SessionMiddleware saves it with a fresh expiry
        return response
