"""Keyboard, phone, dark mode, scrolling and page weight."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import finished_reply, last_reply, send, shot, sign_up, wait_ready
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait

pytestmark = pytest.mark.browser

PAGE_WEIGHT_LIMIT = 100 * 1024


def test_keyboard_only(page: Page, upstream: FakeAnthropic) -> None:
    page.goto("/")
    wait_ready(page)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for _ in range(20):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id")
        if focused == "composer-text":
            break
        if page.evaluate("document.activeElement === document.body"):
            continue  # focus went round through the browser's own UI
        # Every stop on the way is a labelled control with a visible focus ring.
        label = page.evaluate(
            "(el => el.getAttribute('aria-label') || el.labels?.[0]?.textContent || el.textContent)"
            "(document.activeElement)"
        )
        assert label and label.strip(), page.evaluate("document.activeElement.outerHTML")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", page.evaluate("document.activeElement.outerHTML")
    else:
        pytest.fail("Tab never reached the composer")
    box = page.locator("#composer-text")
    expect(box).to_be_focused()
    assert box.evaluate("el => el.matches(':focus-visible') && getComputedStyle(el).outlineStyle !== 'none'")

    upstream.enqueue(Text("Two lines received."), End())
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    expect(box).to_have_value("line one\nline two")  # Shift+Enter made a newline and sent nothing
    page.keyboard.press("Enter")
    expect(page.locator("#messages > .msg-user .msg-body").last).to_have_text("line one\nline two")
    expect(finished_reply(page)).to_contain_text("Two lines received.")
    expect(box).to_be_focused()  # the next message can be typed at once


def test_phone_viewport(new_context: Any, username: str, upstream: FakeAnthropic) -> None:
    context = new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_up(page, username)
    upstream.enqueue(Text("A reply that wraps over several lines on a narrow phone screen, " * 3), End())
    send(page, "Hello from a phone")
    expect(finished_reply(page)).to_contain_text("narrow phone screen")
    composer = page.locator("#composer-text")
    expect(composer).to_be_in_viewport()
    expect(page.locator("#composer button[type=submit]")).to_be_in_viewport()
    expect(page.get_by_role("link", name="New chat")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    shot(page, "phone")
    upstream.enqueue(Text("Second."), End())
    send(page, "Again")
    expect(finished_reply(page)).to_contain_text("Second.")


def test_dark_mode(new_context: Any, username: str, upstream: FakeAnthropic) -> None:
    context = new_context(color_scheme="dark")
    page = context.new_page()
    sign_up(page, username)
    upstream.enqueue(Text("Dark **mode**:\n\n```python\nprint('hi')  # comment\n```\n"), End())
    send(page, "Dark please")
    expect(finished_reply(page).locator("pre")).to_be_visible()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(28, 27, 26)", background
    shot(page, "dark")


def wait_pinned_to_bottom(page: Page) -> None:
    """Until the message list is scrolled to (within 48 px of) its bottom, as auto-scroll keeps it."""
    page.wait_for_function(
        "(() => { const m = document.getElementById('messages');"
        " return m.scrollHeight - m.scrollTop - m.clientHeight < 48; })()"
    )


def test_auto_scroll_pauses_when_scrolled_up(page: Page, upstream: FakeAnthropic) -> None:
    gate = threading.Event()
    long_text = "".join(f"Line {i} of a long reply.\n\n" for i in range(60))
    upstream.enqueue(Text(long_text), Wait(gate, 30), Text("The end."), End())
    send(page, "Write a lot")
    expect(last_reply(page).locator(".msg-streaming")).to_contain_text("Line 59")
    messages = page.locator("#messages")
    # Following the stream: pinned to the bottom.
    wait_pinned_to_bottom(page)
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_hidden()
    messages.evaluate("m => m.scrollTo(0, 0)")
    expect(jump).to_be_visible()
    gate.set()
    expect(finished_reply(page)).to_contain_text("The end.")
    assert messages.evaluate("m => m.scrollTop") < 50  # the page did not yank the reader down
    jump.click()
    expect(jump).to_be_hidden()
    wait_pinned_to_bottom(page)


def test_page_weight(page: Page, upstream: FakeAnthropic) -> None:
    """The chat page loads at most 100 KB of JavaScript and CSS (uncompressed)."""
    upstream.enqueue(Text("Hi."), End())
    send(page, "Weigh me")
    expect(finished_reply(page)).to_contain_text("Hi.")
    page.reload()
    urls = page.evaluate(
        "[...document.querySelectorAll('script[src], link[rel=stylesheet]')].map(e => e.src || e.href)"
    )
    entries = []
    for url in urls:
        response = page.request.get(url)
        assert response.ok, url
        entries.append((url, len(response.body())))
    total = sum(size for _, size in entries)
    print(f"\npage weight: {total} bytes of JS+CSS ({total / 1024:.1f} KB) from {len(entries)} files")
    assert {name.rsplit("/", 1)[-1] for name, _ in entries} >= {"htmx.min.js", "app.js", "app.css"}
    assert all(size > 0 for _, size in entries), entries
    assert total <= PAGE_WEIGHT_LIMIT, entries


def test_an_event_arriving_as_the_reader_scrolls_up_does_not_pull_the_page_back(
    page: Page, upstream: FakeAnthropic
) -> None:
    """Scroll events reach the page a frame late. An SSE message handled in between (here in the same
    task as the scroll, so always in between) used to see the page still "pinned" and scroll it back to the
    bottom; the late scroll event then found it at the bottom and hid "Jump to latest" for good."""
    gate = threading.Event()
    upstream.enqueue(Text("".join(f"Line {i}.\n\n" for i in range(60))), Wait(gate, 30), Text("End."), End())
    send(page, "Write a lot")
    expect(last_reply(page).locator(".msg-streaming")).to_contain_text("Line 59")
    messages = page.locator("#messages")
    wait_pinned_to_bottom(page)
    messages.evaluate(
        "m => { m.scrollTo(0, 0); document.dispatchEvent(new CustomEvent('htmx:sseMessage',"
        " {detail: {type: 'heartbeat', data: '1', lastEventId: ''}})); }"
    )
    expect(page.get_by_role("button", name="Jump to latest")).to_be_visible()
    assert messages.evaluate("m => m.scrollTop") < 50
    gate.set()
    expect(finished_reply(page)).to_contain_text("End.")
