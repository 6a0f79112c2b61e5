"""Edit and branch, and share links, as people use them in the browser."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import finished_reply, send, sign_up, wait_ready
from tests.support.caching import without_breakpoints
from tests.support.fake_anthropic import End, FakeAnthropic, Text

pytestmark = pytest.mark.browser


def test_edit_a_question_then_switch_branches_with_the_keyboard(page: Page, upstream: FakeAnthropic) -> None:
    upstream.enqueue(Text("Paris."), End())
    upstream.enqueue(Text("Rome."), End())
    upstream.enqueue(Text("About 2.1 million."), End())
    send(page, "Capital of France?")
    expect(finished_reply(page)).to_contain_text("Paris.")

    question = page.locator("#messages > article.msg-user").first
    question.get_by_text("Edit", exact=True).click()
    box = question.get_by_label("Edit your message")
    box.fill("Capital of Italy?")
    question.get_by_role("button", name="Save and send").click()
    expect(finished_reply(page)).to_contain_text("Rome.")
    expect(page.locator("#messages")).not_to_contain_text("Paris.")
    edited = page.locator("#messages > article.msg-user").first
    expect(edited).to_contain_text("Capital of Italy?")
    expect(edited.locator(".branch-position")).to_have_text("2 / 2")
    assert without_breakpoints(upstream.requests[1]["body"]["messages"]) == [
        {"role": "user", "content": "Capital of Italy?"}
    ]

    # Back to the first question, by keyboard: its reply comes back with it.
    previous = edited.get_by_role("button", name="Previous alternative")
    previous.focus()
    page.keyboard.press("Enter")
    first = page.locator("#messages > article.msg-user").first
    expect(first).to_contain_text("Capital of France?")
    expect(first.locator(".branch-position")).to_have_text("1 / 2")
    expect(finished_reply(page)).to_contain_text("Paris.")

    page.reload()  # the choice is saved: the visible path survives a reload
    expect(page.locator("#messages > article.msg-user").first).to_contain_text("Capital of France?")
    send(page, "How many people live there?")
    expect(finished_reply(page)).to_contain_text("About 2.1 million.")
    assert without_breakpoints(upstream.requests[2]["body"]["messages"]) == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "How many people live there?"},
    ]


def test_regenerate_shows_the_new_reply_with_its_alternatives(page: Page, upstream: FakeAnthropic) -> None:
    upstream.enqueue(Text("First draft."), End())
    upstream.enqueue(Text("Second draft."), End())
    send(page, "Write a line")
    expect(finished_reply(page)).to_contain_text("First draft.")
    finished_reply(page).get_by_role("button", name="Regenerate").click()
    reply = finished_reply(page)
    expect(reply).to_contain_text("Second draft.")
    expect(reply.locator(".branch-position")).to_have_text("2 / 2")
    reply.get_by_role("button", name="Previous alternative").click()
    expect(finished_reply(page)).to_contain_text("First draft.")
    assert without_breakpoints(upstream.requests[1]["body"]["messages"]) == [
        {"role": "user", "content": "Write a line"}
    ]


def test_a_share_link_opened_by_another_user_and_anonymously_then_revoked(
    page: Page, new_context: Any, upstream: FakeAnthropic, username: str
) -> None:
    upstream.enqueue(Text("# Recipe\n\nMix **flour** and water."), End())
    send(page, "Bread recipe?")
    expect(finished_reply(page).locator("h1")).to_have_text("Recipe")
    page.get_by_text("Settings", exact=True).click()
    page.get_by_role("button", name="Share a read-only link").click()
    expect(page).to_have_url(re.compile(r"/settings/shares/$"))
    link = str(page.locator(".share-link input[readonly]").input_value())
    assert "/s/" in link

    anonymous = new_context().new_page()
    other = new_context().new_page()
    sign_up(other, username[:20] + "-other")
    for reader in (anonymous, other):
        response = reader.goto(link)
        assert response is not None and response.status == 200
        assert response.headers["x-robots-tag"] == "noindex, nofollow"
        expect(reader.locator("header h1")).to_have_text("Bread recipe?")
        expect(reader.locator(".markdown h1")).to_have_text("Recipe")
        expect(reader.locator(".markdown strong")).to_have_text("flour")
        expect(reader.locator("#composer")).to_have_count(0)
        expect(reader.locator("#sidebar")).to_have_count(0)
        assert username not in reader.content()

    wait_ready(page)
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator(".share-item.is-revoked")).to_have_count(1)
    for reader in (anonymous, other):
        response = reader.goto(link)
        assert response is not None and response.status == 404
