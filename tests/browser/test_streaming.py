"""A reply as a person sees it: thinking, first token early, the final rendering, stop, resume, two tabs."""

from __future__ import annotations

import re
import threading

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import (
    LiveServer,
    finished_reply,
    last_reply,
    reply_pk,
    send,
    shot,
)
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait

pytestmark = pytest.mark.browser

CODE_REPLY = 'Here is **bold** and code:\n\n```python\ndef greet(name):\n    return f"hi {name}"\n```\n\nEnd.'


def test_thinking_then_first_token_early_then_final_equals_database(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    shot(page, "empty")
    before_first, before_last = threading.Event(), threading.Event()
    first, rest = CODE_REPLY[:20], CODE_REPLY[20:]
    upstream.enqueue(Wait(before_first, 30), Text(first), Wait(before_last, 30), Text(rest), End())
    send(page, "Show me some code")

    reply = last_reply(page)
    expect(reply).to_have_attribute("aria-busy", "true")
    expect(reply.locator(".thinking")).to_be_visible()  # nothing from the model yet
    shot(page, "thinking")
    expect(page).to_have_url(re.compile(r"/c/\d+/$"))
    expect(page.locator("#conversation-list")).to_contain_text("Show me some code")  # automatic title

    before_first.set()
    expect(reply.locator(".msg-streaming")).to_have_text(first)
    expect(reply.locator(".thinking")).to_be_hidden()
    assert [text for text, _ in upstream.sent] == [first]  # the last token is still held upstream
    shot(page, "streaming")

    before_last.set()
    final = finished_reply(page)
    expect(final.locator(".markdown strong")).to_have_text("bold")
    expect(final.locator(".markdown pre .copy")).to_have_count(1)
    expect(final.locator(".markdown pre .k").first).to_be_visible()  # Pygments highlighted the code
    expect(final.locator(".msg-meta")).to_contain_text("first token")
    expect(final.locator(".msg-meta")).to_contain_text("out tokens")
    shot(page, "finished")

    # The composer is usable at once: typing works and the send button is enabled.
    expect(page.locator("#composer button[type=submit]")).to_be_enabled()
    expect(page.locator("#composer-text")).to_be_editable()

    pk = reply_pk(page)
    content = chat_server.wait_status(pk, "complete")
    assert content == CODE_REPLY
    live_text = final.locator(".msg-body").inner_text()
    page.reload()
    reloaded = page.locator(f"#msg-{pk} .msg-body")
    expect(reloaded.locator("pre")).to_be_visible()
    assert reloaded.inner_text() == live_text


def test_enter_sends_and_composer_is_usable_right_after_the_reply(
    page: Page, upstream: FakeAnthropic
) -> None:
    upstream.enqueue(Text("First answer."), End())
    send(page, "One")
    expect(finished_reply(page)).to_contain_text("First answer.")
    upstream.enqueue(Text("Second answer."), End())
    send(page, "Two")  # straight away: no reload, no click
    expect(page.locator("#messages > .msg-user")).to_have_count(2)
    expect(finished_reply(page)).to_contain_text("Second answer.")
    expect(page.locator("#composer-text")).to_have_value("")
    expect(page.locator("#composer-text")).to_be_focused()


def test_stop_keeps_the_text_and_marks_it_cut_off(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    never = threading.Event()
    upstream.enqueue(Text("A partial answer"), Wait(never, 30), Text(" that never comes."), End())
    send(page, "Tell me a long story")
    reply = last_reply(page)
    expect(reply.locator(".msg-streaming")).to_have_text("A partial answer")
    pk = reply_pk(page)
    reply.get_by_role("button", name="Stop").click()

    final = finished_reply(page)
    expect(final.locator(".cut-off")).to_contain_text("You stopped this response.")
    expect(final.locator(".msg-body")).to_have_text("A partial answer")
    expect(final.get_by_role("button", name="Continue")).to_be_visible()
    assert chat_server.wait_status(pk, "stopped") == "A partial answer"
    never.set()


def test_refresh_mid_reply_resumes_without_gaps_or_duplicates(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    gate1, gate2 = threading.Event(), threading.Event()
    upstream.enqueue(Text("one "), Wait(gate1, 30), Text("two "), Wait(gate2, 30), Text("three"), End())
    send(page, "Count")
    expect(last_reply(page).locator(".msg-streaming")).to_have_text("one ")
    pk = reply_pk(page)
    chat_server.wait_status(pk, "streaming")

    page.reload()
    streaming = page.locator(f"#msg-{pk} .msg-streaming")
    expect(streaming).to_have_text("one ")
    gate1.set()
    expect(streaming).to_have_text("one two ")
    gate2.set()
    final = finished_reply(page)
    expect(final.locator(".msg-body")).to_have_text("one two three")
    assert chat_server.wait_status(pk, "complete") == "one two three"


def test_a_second_tab_shows_the_same_reply_live(
    page: Page, context: BrowserContext, upstream: FakeAnthropic
) -> None:
    gate1, gate2 = threading.Event(), threading.Event()
    upstream.enqueue(Text("Shared "), Wait(gate1, 30), Text("live "), Wait(gate2, 30), Text("reply."), End())
    send(page, "For both tabs")
    expect(last_reply(page).locator(".msg-streaming")).to_have_text("Shared ")

    other = context.new_page()
    other.goto(page.url)
    expect(last_reply(other).locator(".msg-streaming")).to_have_text("Shared ")
    gate1.set()
    for tab in (page, other):
        expect(last_reply(tab).locator(".msg-streaming")).to_have_text("Shared live ")
    gate2.set()
    for tab in (page, other):
        expect(finished_reply(tab).locator(".msg-body")).to_have_text("Shared live reply.")
