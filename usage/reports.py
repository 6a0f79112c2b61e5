"""CSV for finance: the same rows for the dashboard's export and `manage.py usage_report`."""

from __future__ import annotations

from typing import Any

from usage.selectors import Named

HEADER = [
    "scope",
    "name",
    "replies",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_write_tokens",
    "cache_read_tokens",
    "cost_usd",
]


def _row(scope: str, item: Named) -> list[Any]:
    t = item.totals
    return [
        scope,
        item.name,
        t.replies,
        t.errors,
        t.input_tokens,
        t.output_tokens,
        t.cache_creation_tokens,
        t.cache_read_tokens,
        f"{t.cost:.8f}",
    ]


def write_user_rows(writer: Any, users: list[Named]) -> None:
    writer.writerow(HEADER)
    for item in users:
        writer.writerow(_row("user", item))


def write_report(writer: Any, users: list[Named], groups: list[Named]) -> None:
    """Per-user rows, then per-group rows (a member of two groups counts in both), one header."""
    writer.writerow(HEADER)
    for item in users:
        writer.writerow(_row("user", item))
    for item in groups:
        writer.writerow(_row("group", item))
