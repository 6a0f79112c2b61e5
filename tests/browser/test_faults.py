"""Cut-off replies in the page: the marker with its cause, Retry, Continue."""

from __future__ import annotations

import threading

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, finished_reply, reply_pk, send, shot
from tests.support.fake_anthropic import End, ErrorEvent, FakeAnthropic, Text, Wait

pytestmark = pytest.mark.browser


def test_retry_after_a_fault_mid_stream(page: Page, upstream: FakeAnthropic, chat_server: LiveServer) -> None:
    upstream.enqueue(Text("Half an ans"), ErrorEvent("overloaded_error", "Overloaded"))
    send(page, "Explain tides")
    cut = finished_reply(page)
    expect(cut.locator(".cut-off")).to_contain_text("cut off")
    expect(cut.locator(".cut-off")).to_contain_text("overloaded")
    expect(cut.locator(".msg-body")).to_have_text("Half an ans")
    old_pk = reply_pk(page)
    assert chat_server.wait_status(old_pk, "error") == "Half an ans"
    shot(page, "cut-off")

    upstream.enqueue(Text("Tides come from the Moon's pull."), End())
    cut.get_by_role("button", name="Retry").click()
    done = finished_reply(page)
    expect(done.locator(".msg-body")).to_have_text("Tides come from the Moon's pull.")
    expect(done.locator(".cut-off")).to_have_count(0)
    new_pk = reply_pk(page)
    assert new_pk != old_pk
    assert chat_server.wait_status(new_pk, "complete") == "Tides come from the Moon's pull."
    page.reload()  # the old attempt is an alternative, off the visible path
    expect(page.locator("#messages > article.msg-assistant")).to_have_count(1)


def test_continue_after_a_cut_off(page: Page, upstream: FakeAnthropic, chat_server: LiveServer) -> None:
    upstream.enqueue(Text("The list: 1, 2"), ErrorEvent("overloaded_error", "Overloaded"))
    send(page, "Count to three")
    cut = finished_reply(page)
    expect(cut.locator(".cut-off")).to_be_visible()
    pk = reply_pk(page)

    upstream.enqueue(Text(", 3."), End())
    cut.get_by_role("button", name="Continue").click()
    done = finished_reply(page)
    expect(done.locator(".msg-body")).to_have_text("The list: 1, 2, 3.")
    expect(done.locator(".cut-off")).to_have_count(0)
    assert reply_pk(page) == pk  # the same message, continued
    assert chat_server.wait_status(pk, "complete") == "The list: 1, 2, 3."


def test_continue_after_a_partial_ending_in_whitespace_shows_the_saved_text_while_it_streams(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    """Continue trims the partial's trailing whitespace (the API refuses such a prefill), so the reply's
    offset goes down. The page must follow the new offset, not the old stream's last event id."""
    partial = "The list: 1, 2,   \n"
    upstream.enqueue(Text(partial), ErrorEvent("overloaded_error", "Overloaded"))
    send(page, "Count to five")
    cut = finished_reply(page)
    expect(cut.locator(".cut-off")).to_be_visible()
    pk = reply_pk(page)
    assert chat_server.wait_status(pk, "error") == partial

    gate = threading.Event()
    upstream.enqueue(Text(" 3, 4"), Wait(gate, 30), Text(", 5."), End())
    cut.get_by_role("button", name="Continue").click()
    streaming = page.locator(f"#msg-{pk} .msg-streaming")
    # Mid-stream, with the rest held upstream: the page shows exactly what the database holds.
    expect(streaming).to_have_text("The list: 1, 2, 3, 4")
    saved = chat_server.wait_content(pk, "The list: 1, 2, 3, 4")
    assert streaming.evaluate("node => node.textContent") == saved
    gate.set()
    done = finished_reply(page)
    expect(done.locator(".msg-body")).to_have_text("The list: 1, 2, 3, 4, 5.")
    assert chat_server.wait_status(pk, "complete") == "The list: 1, 2, 3, 4, 5."
