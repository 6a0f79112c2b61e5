"""View decorators for the async views on the streaming path."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest
from django.http.response import HttpResponseBase

AsyncView = TypeVar("AsyncView", bound=Callable[..., Awaitable[HttpResponseBase]])


def signed_in_required(view: AsyncView) -> AsyncView:
    """`login_required` for an async view, minus its thread: Django's evaluates `user.is_authenticated`
    through `sync_to_async`, which starts the request's own thread (see chat.handlers). `request.auser()`
    loads the session and user on the request database threads (chat.middleware_inline). Same answer for
    an anonymous request: a redirect to LOGIN_URL with `next`."""

    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        user = await request.auser()
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return await view(request, *args, **kwargs)

    return cast(AsyncView, wrapper)
