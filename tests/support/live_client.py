"""A logged-in HTTP client for live server processes (real sockets), with an SSE reader."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.support.asgi_client import SSEEvent, parse_sse


class LiveClient:
    """One browser-like user: a cookie jar shared across server processes (no sticky routing needed)."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.session.close()

    def csrf(self) -> str:
        for cookie in self.session.cookie_jar:
            if cookie.key == "csrftoken":
                return cookie.value
        raise AssertionError("no csrftoken cookie")

    async def login(self, base: str, username: str, password: str) -> None:
        async with self.session.get(base + "/accounts/login/") as response:
            page = await response.text()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token
        async with self.session.post(
            base + "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)},
            allow_redirects=False,
        ) as response:
            assert response.status == 302, await response.text()

    async def post(self, url: str, data: dict[str, str] | None = None) -> tuple[int, str]:
        headers = {"X-CSRFToken": self.csrf(), "HX-Request": "true"}
        async with self.session.post(
            url, data=data or {}, headers=headers, allow_redirects=False
        ) as response:
            return response.status, await response.text()

    async def events(self, url: str, headers: dict[str, str] | None = None) -> AsyncIterator[SSEEvent]:
        timeout = aiohttp.ClientTimeout(total=60, sock_read=30)
        async with self.session.get(url, headers=headers or {}, timeout=timeout) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            buffer = ""
            async for chunk in response.content.iter_any():
                buffer += chunk.decode()
                events, _, buffer = parse_sse(buffer)
                for event in events:
                    yield event


def sse_path(html: str) -> str:
    match = re.search(r'sse-connect="([^"]+)"', html)
    assert match, html[:300]
    return match.group(1).replace("&amp;", "&")


def ids(path: str) -> tuple[int, int]:
    match = re.match(r"/c/(\d+)/m/(\d+)/", path)
    assert match
    return int(match.group(1)), int(match.group(2))


Row = dict[str, Any]
