"""Make an invite link from the command line (for scripts, or before anyone can reach the admin)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.services import invite_create


class Command(BaseCommand):
    help = "Make a single-use invite link and print it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--note", default="", help="who it is for (staff see it in the admin)")
        parser.add_argument("--days", type=float, default=None, help="how long it works (INVITE_DAYS)")
        parser.add_argument(
            "--base-url",
            default="",
            help="the site's address, e.g. https://chat.example.com, to print a full link",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        invite = invite_create(created_by=None, note=options["note"], days=options["days"])
        self.stdout.write(options["base_url"].rstrip("/") + invite.get_absolute_url())
        self.stderr.write(f"works once, until {invite.expires_at:%Y-%m-%d %H:%M %Z}")
