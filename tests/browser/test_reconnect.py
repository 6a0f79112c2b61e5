"""The page keeps its streams alive: a stalled connection is reopened (it watches the server's heartbeat),
coming back online reopens at once, and a reconnect the server refuses says why instead of spinning.

The server's heartbeat is HEARTBEAT_SECONDS here; the page reopens a stream silent for 1.75 of them.
A stall is made for real: the server process is stopped (SIGSTOP), so the open connection stays up and
silent, and the page's new request waits in the kernel's queue until the server is continued."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import BrowserContext, Page, Request, expect

from tests.browser.conftest import LiveServer, finished_reply, last_reply, reply_pk, send
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait

pytestmark = pytest.mark.browser


@contextmanager
def stopped(server: LiveServer) -> Iterator[None]:
    """The server process frozen: connections stay open, nothing is sent or answered."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def stream_requests(page: Page) -> list[str]:
    urls: list[str] = []

    def seen(request: Request) -> None:
        if "/stream/" in request.url and request.resource_type == "eventsource":  # not the page's probes
            urls.append(request.url)

    page.on("request", seen)
    return urls


def wait_for(page: Page, condition: object, timeout_ms: int = 10_000) -> None:
    """Poll a Python condition while letting the page's events run."""
    waited = 0
    while not condition():  # type: ignore[operator]
        if waited > timeout_ms:
            raise AssertionError("condition not met")
        page.wait_for_timeout(50)
        waited += 50


def test_a_stalled_stream_is_reopened_from_its_offset(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("one "), Wait(gate, 60), Text("two"), End())
    requests = stream_requests(page)
    send(page, "Count")
    streaming = last_reply(page).locator(".msg-streaming")
    expect(streaming).to_have_text("one ")
    pk = reply_pk(page)
    assert len(requests) == 1

    with stopped(chat_server):
        # Nothing reconnects an open, silent EventSource by itself: only the page's stall watch does.
        wait_for(page, lambda: len(requests) >= 2)
    assert "offset=4" in requests[1]  # from the offset it had reached

    gate.set()
    final = finished_reply(page)
    expect(final.locator(".msg-body")).to_have_text("one two")
    assert chat_server.wait_status(pk, "complete") == "one two"


def test_back_online_reopens_at_once_and_the_text_has_no_gap(
    page: Page, context: BrowserContext, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("before "), Wait(gate, 60), Text("after"), End())
    requests = stream_requests(page)
    send(page, "Go offline")
    streaming = last_reply(page).locator(".msg-streaming")
    expect(streaming).to_have_text("before ")
    pk = reply_pk(page)

    context.set_offline(True)
    with stopped(chat_server):
        wait_for(page, lambda: len(requests) >= 2)  # the stall was noticed; reopening fails while offline
    gate.set()
    chat_server.wait_status(pk, "complete")
    # Offline, the extension retries with a backoff that doubles from 0.5 s: after its 4th failed retry
    # (at +7.5 s) the next is due 8 s later. Going online now must reopen at once, not wait for it.
    wait_for(page, lambda: len(requests) >= 6, timeout_ms=20_000)
    context.set_offline(False)
    expect(finished_reply(page).locator(".msg-body")).to_have_text("before after", timeout=3_000)
    assert len(requests) == 7  # exactly one more: the page's own reopen


def _delete_conversation(server: LiveServer, reply_id: int) -> None:
    with sqlite3.connect(server.data_dir / "db.sqlite3", timeout=10) as db:
        (conversation_id,) = db.execute(
            "SELECT conversation_id FROM chat_message WHERE id = ?", (reply_id,)
        ).fetchone()
        db.execute("DELETE FROM chat_message WHERE conversation_id = ?", (conversation_id,))
        db.execute("DELETE FROM chat_conversation WHERE id = ?", (conversation_id,))


def test_a_reconnect_to_a_deleted_conversation_says_so_instead_of_spinning(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("Soon gone"), Wait(gate, 60), Text("."), End())
    requests = stream_requests(page)
    send(page, "Delete me")
    reply = last_reply(page)
    expect(reply.locator(".msg-streaming")).to_have_text("Soon gone")
    pk = reply_pk(page)

    # Deleted behind the app's back (no `ended` event is sent). Written before the server is stopped: a
    # process stopped inside a write transaction would hold SQLite's lock for as long as it is stopped.
    _delete_conversation(chat_server, pk)
    with stopped(chat_server):  # the page is cut off from the server, so it has to reconnect
        wait_for(page, lambda: len(requests) >= 2)
    gate.set()

    notice = reply.locator(".stream-ended")
    expect(notice).to_have_text("This conversation no longer exists: it was deleted.")
    expect(reply).to_have_attribute("aria-busy", "false")
    expect(reply.locator(".thinking")).to_be_hidden()
    expect(reply.locator(".msg-streaming")).to_have_text("Soon gone")  # what was shown stays


def test_a_reconnect_after_the_session_ended_says_sign_in_again(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("Private"), Wait(gate, 60), Text("."), End())
    requests = stream_requests(page)
    send(page, "Sign me out")
    reply = last_reply(page)
    expect(reply.locator(".msg-streaming")).to_have_text("Private")

    # Before the stop, for the same reason as above: a stopped process may hold SQLite's write lock.
    with sqlite3.connect(chat_server.data_dir / "db.sqlite3", timeout=10) as db:
        db.execute("DELETE FROM django_session")  # e.g. expired, or signed out elsewhere
    with stopped(chat_server):
        wait_for(page, lambda: len(requests) >= 2)
    gate.set()
    expect(reply.locator(".stream-ended")).to_contain_text("You are signed out")
    expect(reply).to_have_attribute("aria-busy", "false")
