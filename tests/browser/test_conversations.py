"""Accounts and the sidebar: sign up, log in, switch, rename, delete, search, export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import PASSWORD, finished_reply, send, shot, sign_up, wait_ready
from tests.support.fake_anthropic import End, FakeAnthropic, Text

pytestmark = pytest.mark.browser


def test_sign_up_log_out_and_log_in(context: BrowserContext, username: str, upstream: FakeAnthropic) -> None:
    page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    sign_up(page, username)
    expect(page.locator(".sidebar-bottom")).to_contain_text(username)
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to chatsite")).to_be_visible()

    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".errorlist")).to_be_visible()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#composer-text")).to_be_visible()
    expect(page.get_by_role("heading", name="What can I help with?")).to_be_visible()


def _conversation(page: Page, upstream: FakeAnthropic, text: str, answer: str) -> str:
    page.get_by_role("link", name="New chat").click()
    expect(page.get_by_role("heading", name="What can I help with?")).to_be_visible()
    upstream.enqueue(Text(answer), End())
    send(page, text)
    expect(finished_reply(page).locator(".msg-body")).to_have_text(answer)
    return page.url


def test_a_new_conversation_takes_its_place_in_the_sidebar(page: Page, upstream: FakeAnthropic) -> None:
    """The start's answer carries only the new conversation's sidebar entry (not the whole list): it
    replaces the empty list's notice, is the current one, and goes below the pinned conversations and
    above the others, as a reload of the page shows it."""
    sidebar = page.locator("#conversation-list")
    expect(sidebar).to_contain_text("No conversations yet.")
    _conversation(page, upstream, "Pinned plan", "Kept on top.")
    expect(sidebar).not_to_contain_text("No conversations yet.")
    expect(sidebar.locator("[aria-current=page]")).to_have_text("Pinned plan")
    page.get_by_role("button", name="Pin").click()
    expect(page.get_by_role("button", name="Unpin")).to_be_visible()
    _conversation(page, upstream, "Older talk", "One.")
    _conversation(page, upstream, "Newest talk", "Two.")
    names = ["📌 Pinned plan", "Newest talk", "Older talk"]
    expect(sidebar.get_by_role("link")).to_have_text(names)
    expect(sidebar.locator("[aria-current=page]")).to_have_text("Newest talk")
    page.reload()
    expect(sidebar.get_by_role("link")).to_have_text(names)


def test_the_settings_of_a_conversation_just_started_load_when_opened(
    page: Page, upstream: FakeAnthropic
) -> None:
    """The pane that answers a new conversation's first message leaves its settings panel out (it was a
    quarter of that render) and loads it when first opened; from there it works as on the whole page."""
    _conversation(page, upstream, "Plan a herb garden", "Start with basil.")
    settings = page.locator(".conversation-settings")
    expect(settings.locator("#id_title")).to_have_count(0)
    settings.locator("summary").click()
    expect(settings.get_by_label("Title")).to_have_value("Plan a herb garden")
    settings.get_by_label("System prompt").fill("Answer in one line.")
    settings.get_by_label("Title").fill("Herb garden")
    settings.get_by_role("button", name="Save").click()
    expect(page.locator("#conversation-title")).to_have_text("Herb garden")
    page.locator(".conversation-settings summary").click()
    expect(page.get_by_label("System prompt")).to_have_value("Answer in one line.")


def test_switch_rename_search_export_and_delete(page: Page, upstream: FakeAnthropic, tmp_path: Path) -> None:
    lisbon = _conversation(page, upstream, "Trip to Lisbon", "Pack light.")
    taxes = _conversation(page, upstream, "Taxes due", "File by April.")
    sidebar = page.locator("#conversation-list")
    expect(sidebar.get_by_role("link")).to_have_count(2)
    expect(sidebar.locator("[aria-current=page]")).to_have_text("Taxes due")

    # Switch
    sidebar.get_by_role("link", name="Trip to Lisbon").click()
    expect(page).to_have_url(lisbon)
    expect(page.locator("#messages")).to_contain_text("Pack light.")

    # Rename
    page.locator(".conversation-settings summary").click()
    shot(page, "settings")
    page.get_by_label("Title").fill("Lisbon in May")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#conversation-title")).to_have_text("Lisbon in May")
    expect(sidebar.locator("[aria-current=page]")).to_have_text("Lisbon in May")

    # Search
    wait_ready(page)
    search = page.get_by_role("searchbox", name="Search conversations")
    search.fill("taxes")
    expect(sidebar.get_by_role("link")).to_have_count(1)
    expect(sidebar.get_by_role("link")).to_have_text("Taxes due")
    search.fill("nothing like this")
    expect(sidebar).to_contain_text("No conversation matches")
    search.fill("")
    expect(sidebar.get_by_role("link")).to_have_count(2)

    # Export
    page.locator(".conversation-settings summary").click()
    with page.expect_download() as md_info:
        page.get_by_role("link", name="Markdown").click()
    md_path = tmp_path / md_info.value.suggested_filename
    md_info.value.save_as(md_path)
    markdown = md_path.read_text()
    assert md_path.suffix == ".md" and "Trip to Lisbon" in markdown and "Pack light." in markdown
    with page.expect_download() as json_info:
        page.get_by_role("link", name="JSON").click()
    json_path = tmp_path / json_info.value.suggested_filename
    json_info.value.save_as(json_path)
    data = json.loads(json_path.read_text())
    assert [m["content"] for m in data["messages"]] == ["Trip to Lisbon", "Pack light."]

    # Delete, with a confirmation step that can be cancelled
    page.get_by_role("link", name="Delete…").click()
    expect(page.get_by_role("heading", name="Delete this conversation?")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(lisbon)
    page.locator(".conversation-settings summary").click()
    page.get_by_role("link", name="Delete…").click()
    page.get_by_role("button", name="Delete conversation").click()
    expect(page.get_by_role("heading", name="What can I help with?")).to_be_visible()
    expect(sidebar.get_by_role("link")).to_have_count(1)
    expect(sidebar.get_by_role("link")).to_have_text("Taxes due")
    assert page.goto(lisbon).status == 404  # type: ignore[union-attr]
    assert taxes
