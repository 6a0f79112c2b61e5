"""Drive the real ASGI application (channels router + Django's ASGIHandler) message by message, as Django's
own tests/asgi do, so streams are observed chunk by chunk and disconnects are real `http.disconnect`s."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from asgiref.testing import ApplicationCommunicator

CSRF = "a" * 32  # any well-formed token works when cookie and header agree


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str | None = None


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def parse_sse(buffer: str) -> tuple[list[SSEEvent], list[str], str]:
    """Split complete SSE frames off `buffer`: (events, comments, rest). A `heartbeat` event is transport,
    not content: it is listed with the comments (as "heartbeat"), not with the events."""
    events: list[SSEEvent] = []
    comments: list[str] = []
    while "\n\n" in buffer:
        frame, buffer = buffer.split("\n\n", 1)
        name, data, event_id = "message", [], None
        for line in frame.split("\n"):
            if line.startswith(":"):
                comments.append(line[1:].strip())
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                event_id = value
        if data and name == "heartbeat":
            comments.append("heartbeat")
        elif data:
            events.append(SSEEvent(name, "\n".join(data), event_id))
    return events, comments, buffer


@dataclass
class Stream:
    """An open streaming response: read it event by event, then disconnect or let it end."""

    communicator: ApplicationCommunicator
    status: int
    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)
    buffer: str = ""
    ended: bool = False
    comments: list[str] = field(default_factory=list)

    async def next_event(self, timeout: float = 10.0) -> SSEEvent:
        pending: list[SSEEvent] = []
        while True:
            events, comments, self.buffer = parse_sse(self.buffer)
            self.comments += comments
            pending += events
            if pending:
                first = pending.pop(0)
                # Put back any further complete frames for the next call.
                self.buffer = "".join(_frame(e) for e in pending) + self.buffer
                return first
            if self.ended:
                raise EOFError("stream ended")
            message = await self.communicator.receive_output(timeout)
            assert message["type"] == "http.response.body"
            chunk = message.get("body", b"")
            if chunk:
                self.chunks.append(chunk)
                self.buffer += chunk.decode()
            if not message.get("more_body", False):
                self.ended = True

    async def events_until(self, name: str, timeout: float = 20.0) -> list[SSEEvent]:
        seen: list[SSEEvent] = []
        while True:
            event = await self.next_event(timeout)
            seen.append(event)
            if event.event == name:
                return seen

    async def drain(self, timeout: float = 10.0) -> None:
        """Read to the end of the response and let the application finish."""
        while not self.ended:
            message = await self.communicator.receive_output(timeout)
            self.buffer += message.get("body", b"").decode()
            self.ended = not message.get("more_body", False)
        await self.communicator.wait(timeout)

    async def disconnect(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        try:
            await self.communicator.wait(timeout=5)
        except asyncio.CancelledError:  # the app task was cancelled: that is what a disconnect does
            pass


def _frame(event: SSEEvent) -> str:
    lines = [f"event: {event.event}"]
    if event.id is not None:
        lines.append(f"id: {event.id}")
    lines += [f"data: {line}" for line in event.data.split("\n")]
    return "\n".join(lines) + "\n\n"


class AsgiClient:
    def __init__(
        self, app: Any, cookies: dict[str, str] | None = None, *, client_ip: str = "127.0.0.1"
    ) -> None:
        self.app = app
        self.cookies = {"csrftoken": CSRF, **(cookies or {})}
        self.client_ip = client_ip  # the ASGI scope's client: what daphne puts there (REMOTE_ADDR)

    def _scope(self, method: str, path: str, headers: dict[str, str], query: str) -> dict[str, Any]:
        parts = urlsplit(path)
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        raw = [(b"host", b"testserver"), (b"cookie", cookie.encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(parts.path),  # as ASGI servers do: decoded, so %0D%0A arrives as CR LF
            "raw_path": parts.path.encode(),
            "query_string": (query or parts.query).encode(),
            "headers": raw,
            "client": (self.client_ip, 50000),
            "server": ("testserver", 80),
        }

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, str | list[str]] | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
        htmx: bool = True,
        timeout: float = 10.0,
    ) -> Response:
        scope, body = self._prepared(method, path, data=data, headers=headers, csrf=csrf, htmx=htmx)
        communicator = ApplicationCommunicator(self.app, scope)
        await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
        start = await communicator.receive_output(timeout)
        status = start["status"]
        response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        chunks = []
        while True:
            message = await communicator.receive_output(timeout)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await communicator.wait(timeout)
        self._keep_cookies(start["headers"])
        return Response(status, response_headers, b"".join(chunks))

    def _prepared(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, str | list[str]] | None,
        headers: dict[str, str] | None,
        csrf: bool,
        htmx: bool,
    ) -> tuple[dict[str, Any], bytes]:
        """The scope and body of a request as a browser (or htmx) would send it."""
        headers = dict(headers or {})
        body = b""
        if method == "POST":
            body = urlencode(data or {}, doseq=True).encode()  # a list value repeats its key
            headers.setdefault("content-type", "application/x-www-form-urlencoded")
            if csrf:
                headers.setdefault("x-csrftoken", CSRF)
        if htmx:
            headers.setdefault("hx-request", "true")
        return self._scope(method, path, headers, ""), body

    async def begin(
        self, method: str, path: str, *, data: dict[str, str | list[str]] | None = None
    ) -> ApplicationCommunicator:
        """Send a request (as `request` does) and return at once, its response not awaited: the caller
        reads it from the communicator, or hangs up (`http.disconnect`) before it comes."""
        scope, body = self._prepared(method, path, data=data, headers=None, csrf=True, htmx=True)
        communicator = ApplicationCommunicator(self.app, scope)
        await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
        return communicator

    async def request_as_daphne(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, str | list[str]] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 20.0,
    ) -> Response:
        """A whole request (an event stream included, read to its end), with the one thing daphne does that
        `request` does not: the moment the response's last body message is sent, the application is told
        `http.disconnect` (daphne's `WebRequest.finish()`), while its handler is still finishing."""
        scope, body = self._prepared(method, path, data=data, headers=headers, csrf=True, htmx=True)
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "http.request", "body": body, "more_body": False})
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    inbox.put_nowait({"type": "http.disconnect"})

        await asyncio.wait_for(self.app(scope, inbox.get, send), timeout)
        self._keep_cookies(start["headers"])
        response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return Response(start["status"], response_headers, b"".join(chunks))

    def _keep_cookies(self, headers: list[tuple[bytes, bytes]]) -> None:
        for key, value in headers:
            if key.lower() == b"set-cookie":
                cookie = SimpleCookie(value.decode())
                for name, morsel in cookie.items():
                    self.cookies[name] = morsel.value

    async def open_stream(
        self, path: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> Stream:
        communicator = ApplicationCommunicator(self.app, self._scope("GET", path, dict(headers or {}), ""))
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(timeout)
        return Stream(
            communicator, start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}
        )


def stream_path(html: str) -> str:
    """The sse-connect URL in a rendered fragment."""
    match = re.search(r'sse-connect="([^"]+)"', html)
    assert match, f"no sse-connect in {html[:500]}"
    return match.group(1).replace("&amp;", "&")


def session_cookies(user: Any) -> dict[str, str]:
    """Cookies of a fresh signed-in session for `user` (call from sync code)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}
