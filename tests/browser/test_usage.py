"""The usage page and the staff dashboard in Chromium: a real reply's cache usage and cost in its details,
the server-rendered SVG chart, the composer's remaining-budget line, and the dashboard."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, finished_reply, send, shot
from tests.support.fake_anthropic import End, FakeAnthropic, Text
from usage.models import TTFT_FIELDS

pytestmark = pytest.mark.browser

# A day of earlier spend, written straight into the live server's rollup table.
ZEROS = ("errors", "cache_creation_tokens", "cache_read_tokens", "ttft_count", "ttft_sum_ms", *TTFT_FIELDS)
ROLLUP_INSERT = (
    "INSERT INTO usage_usagedaily (day, user_id, model, cost, replies, input_tokens, output_tokens, "
    f"{', '.join(ZEROS)}) VALUES (?, ?, ?, ?, 1, 100, 100, {', '.join('0' * len(ZEROS))})"
)


def _user_id(server: LiveServer, username: str) -> int:
    return int(server.rows("SELECT id FROM auth_user WHERE username = ?", username)[0][0])


def test_usage_page_chart_budget_line_and_dashboard(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer, username: str
) -> None:
    # (1200x3 + 300x15 + 4000x3.75 + 20000x0.30) / 1M = $0.0291 at the default Sonnet prices.
    upstream.enqueue(
        Text("A long answer, mostly read from the prompt cache."),
        End(
            input_tokens=1200,
            output_tokens=300,
            cache_creation_input_tokens=4000,
            cache_read_input_tokens=20000,
        ),
    )
    send(page, "Summarise our long conversation")
    reply = finished_reply(page)
    expect(reply.locator(".msg-meta")).to_contain_text("cache 4000 written / 20000 read")
    expect(reply.locator(".msg-meta .cost")).to_have_text("$0.0291")

    user_id = _user_id(chat_server, username)
    today = date.today()
    earlier = [
        today - timedelta(days=k) for k in range(1, 6) if (today - timedelta(days=k)).month == today.month
    ]
    for k, day in enumerate(earlier):
        for model, cost in (("claude-haiku-5-5", 0.002 * (k + 1)), ("claude-opus-5-5", 0.004 * (5 - k))):
            chat_server.rows(
                ROLLUP_INSERT,
                day.isoformat(),
                user_id,
                model,
                f"{cost:.4f}",
            )
    spent = 0.0291 + sum(0.002 * (k + 1) + 0.004 * (5 - k) for k in range(len(earlier)))
    # A budget with under 10% left: the composer says how much remains.
    limit = round(spent / 0.95 + 0.005, 2)
    chat_server.rows(
        "INSERT INTO usage_budget (user_id, group_id, period, limit_usd, limit_tokens, note, updated_at)"
        " VALUES (?, NULL, 'monthly', ?, NULL, '', '2026-11-01 00:00:00')",
        user_id,
        f"{limit:.2f}",
    )
    page.reload()
    expect(page.locator("#budget-notice")).to_contain_text(
        re.compile(r"\$0\.\d+ left of your monthly budget")
    )
    shot(page, "budget-notice")

    page.get_by_role("link", name="Usage", exact=True).first.click()
    expect(page.get_by_role("heading", name=re.compile("Your usage in"))).to_be_visible()
    chart = page.locator("#usage-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar")).to_have_count(1 + 2 * len(earlier))
    expect(page.locator("#usage-spent")).to_have_text(f"${spent:.2f}")
    expect(page.locator("#expensive-conversations")).to_contain_text("Summarise our long conversation")
    expect(page.locator(".usage-card.budget")).to_contain_text("used")
    box = chart.bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 150  # drawn at a readable size
    shot(page, "usage")

    chat_server.rows("UPDATE auth_user SET is_staff = 1 WHERE id = ?", user_id)
    page.goto("/usage/staff/")
    expect(page.get_by_role("heading", name="Usage dashboard")).to_be_visible()
    expect(page.locator("#dashboard-users")).to_contain_text(username)
    expect(page.locator("#dashboard-models")).to_contain_text("claude-sonnet-5-5")
    expect(page.locator("#usage-chart rect.bar").first).to_be_visible()
    shot(page, "dashboard")
