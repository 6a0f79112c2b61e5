"""`manage.py purge_attachments`: delete attachments uploaded but never sent (run it daily, from cron)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from chat.services import attachments_purge_pending


class Command(BaseCommand):
    help = "Delete attachments that were uploaded but never sent, older than CHAT_ATTACHMENT_PENDING_HOURS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hours", type=float, default=settings.CHAT_ATTACHMENT_PENDING_HOURS)

    def handle(self, *args: Any, hours: float, **options: Any) -> None:
        deleted = attachments_purge_pending(older_than=timedelta(hours=hours))
        self.stdout.write(f"Deleted {deleted} pending attachment(s) older than {hours:g} hours.")
