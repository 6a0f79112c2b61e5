"""Pure functions of usage accounting: cost maths per token kind, price lookup, the chart's geometry, the
first-token histogram and budget periods. Figures are computed by hand in the comments."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from usage.budgets import BudgetStatus, period_end, period_start
from usage.charts import stacked_bars
from usage.models import TTFT_FIELDS, ttft_field
from usage.pricing import Prices, TokenUsage, cost_of, prices_for
from usage.selectors import bucket_label, percentile_bucket

SONNET = Prices(Decimal(3), Decimal(15), Decimal("3.75"), Decimal("0.30"))


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (TokenUsage(input=1000), Decimal("0.003")),  # 1,000 x $3 / 1M
        (TokenUsage(output=2000), Decimal("0.03")),  # 2,000 x $15 / 1M
        (TokenUsage(cache_creation=10_000), Decimal("0.0375")),  # 10,000 x $3.75 / 1M
        (TokenUsage(cache_read=50_000), Decimal("0.015")),  # 50,000 x $0.30 / 1M
        (TokenUsage(1000, 2000, 10_000, 50_000), Decimal("0.0855")),  # the four together
        (TokenUsage(cache_read=1), Decimal("0.0000003")),  # one token, exactly
        (TokenUsage(), Decimal(0)),
    ],
)
def test_cost_of_each_token_kind(usage: TokenUsage, expected: Decimal) -> None:
    assert cost_of(usage, SONNET) == expected


def test_cost_rounds_once_half_up_to_eight_places() -> None:
    odd = Prices(Decimal("0.005"), Decimal(0), Decimal(0), Decimal(0))
    assert cost_of(TokenUsage(input=1), odd) == Decimal("0.00000001")  # 0.000000005 rounds up
    assert cost_of(TokenUsage(input=3), odd) == Decimal("0.00000002")  # 0.000000015 rounds up
    # Summing rounded parts would differ: the whole is rounded once.
    assert cost_of(TokenUsage(input=1), odd) + cost_of(TokenUsage(input=1), odd) != cost_of(
        TokenUsage(input=2), odd
    )


def test_missing_cache_prices_follow_the_published_pattern() -> None:
    prices = Prices.from_mapping({"input": 3, "output": 15})
    assert prices.cache_write == Decimal("3.75") and prices.cache_read == Decimal("0.3")
    assert Prices.from_mapping({"input": "1", "output": "5", "cache_read": "0.2"}).cache_read == Decimal(
        "0.2"
    )
    assert prices.snapshot() == {"input": "3", "output": "15", "cache_write": "3.75", "cache_read": "0.3"}


def test_dated_model_ids_take_the_longest_matching_name() -> None:
    table = {"claude-sonnet": SONNET, "claude-sonnet-5-5": Prices.from_mapping({"input": 9, "output": 9})}
    assert prices_for("claude-sonnet-5-5-20261001", table) is table["claude-sonnet-5-5"]
    assert prices_for("claude-sonnet-4", table) is SONNET
    assert prices_for("gpt", table) is None


def test_usage_adds_up_per_kind() -> None:
    total = TokenUsage(1, 2, 3, 4) + TokenUsage(10, 20, 30, 40)
    assert total == TokenUsage(11, 22, 33, 44) and total.total == 110


def test_stacked_bars_are_proportional_and_stacked_per_day() -> None:
    days = [date(2026, 11, 1), date(2026, 11, 2)]
    values = {
        (days[0], "claude-haiku-5-5"): Decimal("1.00"),
        (days[0], "claude-sonnet-5-5"): Decimal("3.00"),
        (days[1], "claude-sonnet-5-5"): Decimal("2.00"),
    }
    chart = stacked_bars(days=days, values=values, width=456, height=232)
    # Plot area: 456 - 56 - 8 = 392 wide, 232 - 8 - 24 = 200 high; the peak (4.00) gives an axis of 5.
    assert [t.label for t in chart.y_ticks] == ["$0.00", "$1.25", "$2.50", "$3.75", "$5.00"]
    haiku, sonnet, sonnet2 = chart.bars
    assert haiku.height == 40.0 and haiku.y == 168.0  # 1/5 of 200, from the baseline at 208
    assert sonnet.height == 120.0 and sonnet.y == 48.0  # stacked on top of haiku
    assert sonnet2.height == 80.0 and sonnet2.x == 56 + 196 + (196 - 137.2) / 2
    assert haiku.color != sonnet.color == sonnet2.color
    assert [item.label for item in chart.legend] == ["claude-haiku-5-5", "claude-sonnet-5-5"]
    assert "$6.00 over 2 days" in chart.description and not chart.empty
    assert "2 Nov: claude-sonnet-5-5 $2.00" == sonnet2.title


def test_an_empty_chart_says_so() -> None:
    chart = stacked_bars(days=[date(2026, 11, 1)], values={})
    assert chart.empty and chart.bars == ()


def test_first_token_histogram_percentiles() -> None:
    assert ttft_field(100) == "ttft_le_100" and ttft_field(101) == "ttft_le_250"
    assert ttft_field(30_000) == "ttft_le_30000" and ttft_field(30_001) == "ttft_over"
    counts = [0] * len(TTFT_FIELDS)
    counts[TTFT_FIELDS.index("ttft_le_500")] = 50
    counts[TTFT_FIELDS.index("ttft_le_1000")] = 45
    counts[TTFT_FIELDS.index("ttft_over")] = 5
    assert bucket_label(percentile_bucket(counts, 0.5)) == "≤ 500 ms"  # the 50th of 100 is in the first
    assert bucket_label(percentile_bucket(counts, 0.95)) == "≤ 1 s"  # the 95th is the last under 1 s
    assert bucket_label(percentile_bucket(counts, 0.96)) == "> 30 s"
    assert bucket_label(percentile_bucket([0] * len(TTFT_FIELDS), 0.5)) == "-"


def test_budget_periods_and_reset_dates() -> None:
    assert period_start("monthly", date(2026, 11, 21)) == date(2026, 11, 1)
    assert period_end("monthly", date(2026, 11, 21)) == date(2026, 12, 1)
    assert period_end("monthly", date(2026, 12, 31)) == date(2027, 1, 1)
    assert period_end("monthly", date(2028, 2, 3)) == date(2028, 3, 1)
    assert period_end("daily", date(2026, 11, 30)) == date(2026, 12, 1)


def test_budget_status_words() -> None:
    status = BudgetStatus(
        budget_id=1,
        period="monthly",
        in_tokens=False,
        limit=Decimal("5.00"),
        spent=Decimal("4.80"),
        reserved=Decimal("0.10"),
        group_name="",
        resets_on=date(2026, 12, 1),
    )
    assert not status.exhausted and status.remaining == Decimal("0.10") and status.percent_used == 98
    assert status.short == "$0.10 left of your monthly budget of $5.00"
    over = BudgetStatus(
        1, "daily", True, Decimal(1000), Decimal(1200), Decimal(0), "Interns", date(2026, 11, 22)
    )
    assert over.exhausted and over.remaining == 0
    assert over.refusal() == (
        "The Interns group's daily budget of 1,000 tokens per member is used up, "
        "so this message was not sent. It resets on 22 November 2026 at 00:00 (UTC)."
    )
