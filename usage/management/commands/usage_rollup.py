"""`manage.py usage_rollup --rebuild [--since 2026-11-01]`: recompute the daily usage rollup from replies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from usage.accounting import rebuild_rollup


class Command(BaseCommand):
    help = "Recompute the daily usage rollup from the saved replies (a backfill)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rebuild", action="store_true", help="Required: replace the rollup's rows.")
        parser.add_argument("--since", help="Only days from this date (YYYY-MM-DD) on.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["rebuild"]:
            raise CommandError(
                "Pass --rebuild to replace the rollup (spend of deleted conversations is lost)."
            )
        since = None
        if options["since"]:
            try:
                since = datetime.strptime(options["since"], "%Y-%m-%d").date()
            except ValueError as exc:
                raise CommandError("--since must be YYYY-MM-DD.") from exc
        rows = rebuild_rollup(since=since)
        self.stdout.write(f"Wrote {rows} rollup rows.")
