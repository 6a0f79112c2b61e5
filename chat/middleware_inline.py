"""Django's own middleware (and django-csp's), with their hooks run inline on the event loop.

`MiddlewareMixin.__acall__` runs every `process_request` / `process_response` through
`sync_to_async(thread_sensitive=True)`, so each request gets a thread of its own, and an event stream keeps
it for its whole life (see `chat.handlers`). These hooks are CPU-only (headers, cookies, lazy objects), with
two exceptions kept in the request's thread: a session that must be saved, and message storage that would
read an unloaded session. `chat.handlers.StreamingASGIHandler` loads these classes in place of the ones
settings.MIDDLEWARE names; under WSGI or the test client nothing changes.

The other middleware in settings.MIDDLEWARE is async-native already: django-permissions-policy, django-htmx
and django-axes (`async_capable`, no thread unless axes renders a lockout), ServeStatic, and ours."""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from asgiref.sync import sync_to_async
from csp.middleware import CSPMiddleware as _CSPMiddleware
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as _AuthenticationMiddleware
from django.contrib.auth.middleware import get_user
from django.contrib.messages.middleware import MessageMiddleware as _MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as _SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware as _XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware as _CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware as _CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware as _SecurityMiddleware

from chat.streaming.db import request_db


class InlineHooks:
    """An `__acall__` that calls the hooks directly. `aprocess_response` may send work to a thread."""

    get_response: Any

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = await self.aprocess_response(request, response)
        return response

    async def aprocess_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        return self.process_response(request, response)  # type: ignore[attr-defined]


class SecurityMiddleware(InlineHooks, _SecurityMiddleware):
    pass


class CSPMiddleware(InlineHooks, _CSPMiddleware):
    pass


class CommonMiddleware(InlineHooks, _CommonMiddleware):
    pass


class XFrameOptionsMiddleware(InlineHooks, _XFrameOptionsMiddleware):
    pass


class SessionMiddleware(InlineHooks, _SessionMiddleware):
    """Saving a modified session writes to the database: that, and only that, goes to the request
    database threads (a signed-in user's first request after a minute renews the session: with a new
    thread and SQLite connection for it, that save was 1% of the server's samples at N=50). An unmodified
    session costs nothing here (its cookie and Vary header only)."""

    async def aprocess_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        session = getattr(request, "session", None)
        if session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST):
            return await request_db(self.process_response)(request, cast(HttpResponse, response))
        return self.process_response(request, cast(HttpResponse, response))


class CsrfViewMiddleware(InlineHooks, _CsrfViewMiddleware):
    """The check reads `request.POST`; a multipart body may be spooled to disk, so it is parsed in the
    request's thread, as Django does."""

    async def process_view(  # type: ignore[override]
        self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any
    ) -> HttpResponseBase | None:
        check = partial(super().process_view, request, callback, callback_args, callback_kwargs)
        if request.content_type == "multipart/form-data":
            return await sync_to_async(check)()
        return check()


class MessageMiddleware(InlineHooks, _MessageMiddleware):
    """Storing messages may read the session (FallbackStorage: cookie, then session): inline only when
    there is nothing to store, or the session is loaded already."""

    async def aprocess_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        storage = getattr(request, "_messages", None)
        session = getattr(request, "session", None)
        idle = storage is None or not (storage.used or storage.added_new)
        if idle or (session is not None and hasattr(session, "_session_cache")):
            return self.process_response(request, cast(HttpResponse, response))
        return await sync_to_async(self.process_response)(request, cast(HttpResponse, response))


def request_user(request: HttpRequest) -> Any:
    """The session's user (or AnonymousUser), loaded once per request where sync code may run, and cached
    as `request.auser()` and `request.user` cache it: code already on the request database threads (a start
    view's one trip there) reads it without a trip of its own, and a template reading `request.user` after
    runs no query."""
    if not hasattr(request, "_acached_user"):
        request._acached_user = request._cached_user = get_user(request)  # type: ignore[attr-defined]
    return request._acached_user  # type: ignore[attr-defined]


_load_user = request_db(request_user)


async def auser(request: HttpRequest) -> Any:
    """`request.auser()`: the session and the user, loaded in one call on the request database threads
    (persistent connections), not in two `sync_to_async` hops in the request's own thread. Cached like
    Django's (see `request_user`)."""
    if not hasattr(request, "_acached_user"):
        await _load_user(request)
    return request._acached_user  # type: ignore[attr-defined]


class AuthenticationMiddleware(InlineHooks, _AuthenticationMiddleware):
    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        request.auser = partial(auser, request)
