"""Markdown while it streams, as a person sees it: formatted before the reply ends, exact after a reload."""

from __future__ import annotations

import threading
import time

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, finished_reply, last_reply, reply_pk, send
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait

pytestmark = pytest.mark.browser


def wait_saved(server: LiveServer, pk: int, text: str) -> None:
    deadline = time.monotonic() + 15
    while server.message(pk)[0] != text:
        assert time.monotonic() < deadline, "the partial reply was not saved"
        time.sleep(0.05)


FINISHED = "# Plan\n\nThis is **important**.\n\n```python\ndef greet(name):\n    return name\n```\n\n"
OPEN = "Still writing *this"
REST = " part*.\n\n- one\n- two\n"


def test_heading_bold_and_code_are_formatted_before_the_reply_ends_and_survive_a_reload(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    gate = threading.Event()
    first, second, third = FINISHED[:9], FINISHED[9:40], FINISHED[40:] + OPEN
    upstream.enqueue(Text(first), Text(second), Text(third), Wait(gate, 30), Text(REST), End())
    send(page, "Plan it")
    reply = last_reply(page)
    body = reply.locator(".msg-streaming")
    expect(body.locator("h1")).to_have_text("Plan")
    expect(body.locator("strong")).to_have_text("important")
    expect(body.locator("pre .k").first).to_be_visible()  # highlighted by Pygments, on the server
    expect(body.locator("pre .copy")).to_have_count(1)
    expect(reply.locator(".md-tail")).to_have_text(OPEN)  # the open block is still plain text
    expect(reply).to_have_attribute("aria-busy", "true")
    assert not gate.is_set() and "".join(t for t, _ in upstream.sent).endswith(OPEN)

    pk = reply_pk(page)
    saved = FINISHED + OPEN
    live_tail = reply.locator(".md-tail")
    live_start = int(str(live_tail.get_attribute("data-start")))
    assert saved[live_start:] == live_tail.evaluate("e => e.textContent")
    chat_server.wait_status(pk, "streaming")
    wait_saved(chat_server, pk, saved)
    page.reload()
    body = page.locator(f"#msg-{pk} .msg-streaming")
    expect(body.locator("h1")).to_have_text("Plan")
    expect(body.locator("pre .k").first).to_be_visible()
    tail = page.locator(f"#msg-{pk} .md-tail")
    expect(tail).to_have_text(OPEN)
    # The page's text is the saved reply: rendered blocks for the finished prefix, then the raw rest.
    start = int(str(tail.get_attribute("data-start")))
    content, _ = chat_server.message(pk)
    assert content == saved and content[start:] == tail.evaluate("element => element.textContent")

    gate.set()
    final = finished_reply(page)
    expect(final.locator(".markdown em")).to_have_text("this part")
    expect(final.locator(".markdown li")).to_have_count(2)
    assert chat_server.wait_status(pk, "complete") == FINISHED + OPEN + REST
    # app.js adds each code block's Copy button after the swap: compare once both pages have theirs.
    expect(final.locator("pre .copy")).to_have_count(1)
    live_text = final.locator(".msg-body").inner_text()
    page.reload()
    expect(page.locator(f"#msg-{pk} .markdown li")).to_have_count(2)
    expect(page.locator(f"#msg-{pk} pre .copy")).to_have_count(1)
    assert page.locator(f"#msg-{pk} .msg-body").inner_text() == live_text
