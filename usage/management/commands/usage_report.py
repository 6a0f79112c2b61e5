"""`manage.py usage_report --month 2026-11`: per-user and per-group totals of a calendar month, as CSV."""

from __future__ import annotations

import csv
from datetime import date, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from usage.reports import write_report
from usage.selectors import month_bounds, report


class Command(BaseCommand):
    help = "Per-user and per-group usage and cost for one month, as CSV on stdout (for finance)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", required=True, help="The month, as YYYY-MM (e.g. 2026-11).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            month = datetime.strptime(options["month"], "%Y-%m").date()
        except ValueError as exc:
            raise CommandError(f"--month must be YYYY-MM, not {options['month']!r}.") from exc
        start, end = month_bounds(date(month.year, month.month, 1))
        users, groups = report(start=start, end=end)
        write_report(csv.writer(self.stdout), users, groups)
