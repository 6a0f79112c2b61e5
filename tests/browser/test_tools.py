"""Tool use in the page: the indicator while the tool runs, then the reply goes on in the same message."""

from __future__ import annotations

import threading

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, finished_reply, last_reply, reply_pk, send, shot
from tests.support.fake_anthropic import End, FakeAnthropic, Text, ToolUse, Wait

pytestmark = pytest.mark.browser


def test_tool_indicator_then_result_then_the_reply_continues(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    args_sent, answer = threading.Event(), threading.Event()
    upstream.enqueue(
        Text("Let me work that out."),
        ToolUse("toolu_b1", "calculator", ['{"expression": ']),
        Wait(args_sent, timeout=30),  # the arguments are still streaming: the page says what is being used
        End(stop_reason="tool_use"),
    )
    upstream.enqueue(Wait(answer, timeout=30), Text("So 12 times 7 is 84."), End())
    send(page, "What is 12*7?")
    live = last_reply(page)
    expect(live.locator(".tool-call")).to_contain_text("Using calculator…", timeout=15_000)
    shot(page, "tool-running")
    args_sent.set()
    # The fake's script sends no more argument text; the SDK sees `{"expression": ` ... then End, so the
    # arguments end up empty and the calculator reports an error the model can read.
    expect(live.locator(".tool-call .tool-result")).to_be_visible(timeout=15_000)
    expect(live.locator(".tool-call")).to_have_count(1)  # replaced in place, not repeated
    answer.set()
    done = finished_reply(page)
    expect(done.locator(".tool-call")).to_have_count(1)
    expect(done.locator(".msg-body")).to_contain_text("Let me work that out.")
    expect(done.locator(".msg-body")).to_contain_text("So 12 times 7 is 84.")
    pk = reply_pk(page)
    assert chat_server.wait_status(pk, "complete").endswith("So 12 times 7 is 84.")
    shot(page, "tool-finished")
    before = done.inner_html()
    page.reload()
    expect(finished_reply(page).locator(".tool-call")).to_have_count(1)
    assert finished_reply(page).inner_html() == before


def test_tool_call_with_complete_arguments_shows_its_result(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    upstream.enqueue(
        ToolUse("toolu_b2", "calculator", ['{"expression": "6*7"}']), End(stop_reason="tool_use")
    )
    upstream.enqueue(Text("It is 42."), End())
    send(page, "6*7?")
    done = finished_reply(page)
    expect(done.locator(".tool-call")).to_contain_text("Used calculator")
    expect(done.locator(".tool-call .tool-result")).to_have_text("6*7 = 42")
    expect(done.locator(".msg-body")).to_contain_text("It is 42.")
