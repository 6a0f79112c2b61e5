"""Django's ASGI handler, minus the thread it gives every request.

Measured (py-spy and /proc, issue 15, N=50 streams): under Django's own ASGIHandler every request got a
thread of its own (asgiref's per-request `ThreadSensitiveContext` executor), and an event stream held it for
its whole life: 54 threads for 50 open streams, ~320 KB RSS per stream, thread start/stop and lock hand-offs
a quarter of the server's CPU. Three things made that thread, each before the view ran:

1. `request_started.asend(...)` runs the sync receivers (`close_old_connections`, `reset_queries`) through
   `sync_to_async`; so do `request_finished` and `response.close()` at the end.
2. `MiddlewareMixin.__acall__` runs each `process_request` / `process_response` hook of Django's own
   middleware through `sync_to_async(thread_sensitive=True)`; a sync-only middleware (WhiteNoise) even put
   the whole chain in a thread. ServeStatic replaced WhiteNoise (settings.MIDDLEWARE).
3. `login_required` on an async view evaluates `user.is_authenticated` through `sync_to_async` (our async
   views use `chat.decorators.signed_in_required`, or load the user in their one database trip).

`StreamingASGIHandler` removes 1 and 2: the signals fire inline on the event loop, whose thread has no
database connection to close (Django refuses synchronous ORM calls there), and the response is closed in the
request's thread only if the request made one, so sync views still get their connections closed where they
opened them. Django's middleware classes named in settings.MIDDLEWARE are loaded as the subclasses in
`INLINE_ASYNC` (`chat.middleware_inline`), whose hooks run on the loop (CPU only; a session save or message
storage still goes to the request's thread). settings.MIDDLEWARE keeps naming Django's classes, so
`check --deploy` and the admin's checks see what they look for. A request that never calls thread-sensitive
`sync_to_async` (an event stream) now makes no thread at all; the per-request context stays, so sync views
and any other sync work of one request still share one thread, as Django intends."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import django
from asgiref.sync import SyncToAsync, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponseBase
from django.urls import set_script_prefix
from django.utils.module_loading import import_string

logger = logging.getLogger("django.request")

# Django's (and django-csp's) MiddlewareMixin classes -> subclasses whose hooks run on the event loop.
INLINE_ASYNC = {
    path: "chat.middleware_inline." + path.rsplit(".", 1)[1]
    for path in (
        "django.middleware.security.SecurityMiddleware",
        "csp.middleware.CSPMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    )
}


def request_thread_started() -> bool:
    """Has the current request (its ThreadSensitiveContext) started its own thread? True when unsure."""
    try:
        context = SyncToAsync.thread_sensitive_context.get()
    except (LookupError, AttributeError):
        return True
    executors = getattr(SyncToAsync, "context_to_thread_executor", None)
    return executors is None or context in executors


async def _close(response: HttpResponseBase) -> None:
    """`response.close()` (its closers, then `request_finished`, which closes database connections): in
    the request's thread if it has one, since that is where its sync code opened connections; else here."""
    if request_thread_started():
        await sync_to_async(response.close)()
    else:
        response.close()


async def _request_finished(sender: type) -> None:
    if request_thread_started():
        await signals.request_finished.asend(sender=sender)
    else:
        signals.request_finished.send(sender=sender)


# What `ASGIRequest.close()` uses: the uploaded files and the body stream.
_KEPT_BY_SHED = frozenset({"_files", "_stream"})


def shed(request: HttpRequest, *, keep: frozenset[str] = _KEPT_BY_SHED) -> None:
    """Drop what a request holds, except `keep` (by default, what `close()` needs).

    Once its streaming response exists: the response keeps `request.close` to call at the end, so without
    this an event stream keeps its whole request alive for as long as it streams: headers, cookies, the
    query dicts, the resolver match, the session and the user (traced: ~31 KB per open stream of Django
    objects, docs/notes/memory.md). The view and the middleware have all returned by then; nothing reads
    the request again.

    And once any request is over (`keep=frozenset()`): a request is a knot of reference cycles by Django's
    design (`request.user` is a lazy object whose closure holds the request, `request.auser` a partial of
    it, the messages storage and `request.htmx` hold it back), so refcounting never frees it. A request
    lives through many young collections while it is handled and is promoted to the oldest generation, so
    its garbage (session, user, query dicts, whatever the view hung on it) waited for a full collection."""
    attributes = vars(request)
    kept = {name: value for name, value in attributes.items() if name in keep}
    attributes.clear()
    attributes.update(kept)


class StreamingASGIHandler(ASGIHandler):
    """Django 5.2's ASGIHandler with the changes described in the module docstring."""

    def load_middleware(self, is_async: bool = False) -> None:
        """Django 5.2's BaseHandler.load_middleware, with each class looked up through INLINE_ASYNC."""
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []

        get_response = self._get_response_async if is_async else self._get_response  # type: ignore[attr-defined]
        handler = convert_exception_to_response(get_response)
        handler_is_async = is_async
        for middleware_path in reversed(settings.MIDDLEWARE):
            loaded_path = INLINE_ASYNC.get(middleware_path, middleware_path) if is_async else middleware_path
            middleware = import_string(loaded_path)
            middleware_can_sync = getattr(middleware, "sync_capable", True)
            middleware_can_async = getattr(middleware, "async_capable", False)
            if not middleware_can_sync and not middleware_can_async:
                raise RuntimeError(
                    f"Middleware {middleware_path} must have at least one of sync_capable/async_capable set "
                    "to True."
                )
            if not handler_is_async and middleware_can_sync:
                middleware_is_async = False
            else:
                middleware_is_async = middleware_can_async
            try:
                adapted_handler = self.adapt_method_mode(
                    middleware_is_async,
                    handler,
                    handler_is_async,
                    debug=settings.DEBUG,
                    name=f"middleware {middleware_path}",
                )
                mw_instance = middleware(adapted_handler)
            except MiddlewareNotUsed:
                continue
            handler = adapted_handler
            if mw_instance is None:
                raise ImproperlyConfigured(f"Middleware factory {middleware_path} returned None.")
            if hasattr(mw_instance, "process_view"):
                self._view_middleware.insert(0, self.adapt_method_mode(is_async, mw_instance.process_view))
            if hasattr(mw_instance, "process_template_response"):
                self._template_response_middleware.append(
                    self.adapt_method_mode(is_async, mw_instance.process_template_response)
                )
            if hasattr(mw_instance, "process_exception"):
                exception_hook = self.adapt_method_mode(False, mw_instance.process_exception)
                self._exception_middleware.append(exception_hook)
            handler = convert_exception_to_response(mw_instance)
            handler_is_async = middleware_is_async
        self._middleware_chain = self.adapt_method_mode(is_async, handler, handler_is_async)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django 5.2's ASGIHandler.handle, with the signals and the response's close as described above."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None
            body_file.close()
            await self.send_response(error_response, send)
            await _close(error_response)
            return

        async def process_request(request: Any, send: Any) -> HttpResponseBase:
            response = await self.run_get_response(request)
            if response.streaming:
                shed(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client disconnected during send_response
            return response

        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                # `exception()`, where Django calls `result()` and catches RequestAborted: re-raising the
                # task's exception here would add this frame to its traceback, and this frame holds the
                # task that holds the exception. That cycle kept every request whose client hung up
                # (every POST, every finished stream: daphne sends http.disconnect once the response is
                # done), with its request, response and rendered context, until a full collection.
                error = task.exception()  # CancelledError if the task was cancelled, as `result()`
                if error is not None and not isinstance(error, RequestAborted):
                    if isinstance(error, AssertionError):
                        body_file.close()
                    raise error
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if tasks[1].cancelled():
            await _request_finished(self.__class__)
        else:
            response = tasks[1].result()
            if response is not None:
                await _close(response)
        body_file.close()
        shed(request, keep=frozenset())


def get_asgi_application() -> StreamingASGIHandler:
    """`django.core.asgi.get_asgi_application`, with this handler."""
    django.setup(set_prefix=False)
    return StreamingASGIHandler()


__all__ = ["INLINE_ASYNC", "StreamingASGIHandler", "get_asgi_application", "request_thread_started", "shed"]
