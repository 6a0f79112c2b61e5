"""`manage.py usage_bench --messages 1000000`: fill a PostgreSQL database with synthetic replies, rebuild
the rollup, and time the queries behind the dashboard, the usage page, the budget check and the report.

For measurement only, on a database of its own (it refuses anything but PostgreSQL and asks for --yes
unless the database name contains "bench" or "usage"). Rows are written with COPY; users are `bench-N`."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from chat.models import Conversation, Message
from usage import selectors
from usage.accounting import price_table, prices_of, rebuild_rollup
from usage.budgets import budget_statuses
from usage.models import Budget
from usage.pricing import TokenUsage, cost_of

MODELS = (("claude-sonnet-5-5", 0.7), ("claude-haiku-5-5", 0.2), ("claude-opus-5-5", 0.1))
COLUMNS = (
    "conversation_id",
    "role",
    "content",
    "blocks",
    "note",
    "status",
    "error_code",
    "error_message",
    "model",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "cost",
    "prices",
    "ttft_ms",
    "duration_ms",
    "created_at",
    "finished_at",
    "stop_requested",
    "context_dropped",
)


class Command(BaseCommand):
    help = "Generate synthetic replies in PostgreSQL and time the usage queries (a benchmark)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--messages", type=int, default=1_000_000)
        parser.add_argument("--users", type=int, default=1000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--repeat", type=int, default=5, help="timed runs per query (median shown)")
        parser.add_argument("--skip-generate", action="store_true", help="time the existing data only")
        parser.add_argument("--yes", action="store_true", help="allow any PostgreSQL database name")

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("usage_bench needs PostgreSQL (DATABASE_URL=postgres://…).")
        name = str(connection.settings_dict["NAME"])
        if not options["yes"] and not any(word in name for word in ("bench", "usage")):
            raise CommandError(f"Refusing to fill database {name!r}; pass --yes if it is a scratch database.")
        if not options["skip_generate"]:
            self.generate(options["messages"], options["users"], options["days"])
        self.measure(options["repeat"], options["days"])

    def generate(self, messages: int, users: int, days: int) -> None:
        started = time.perf_counter()
        Message.objects.filter(conversation__user__username__startswith="bench-").delete()
        User.objects.filter(username__startswith="bench-").delete()
        groups = [Group.objects.get_or_create(name=f"bench-team-{i}")[0] for i in range(10)]
        password = make_password(None)
        made = User.objects.bulk_create(
            [User(username=f"bench-{i:05d}", password=password) for i in range(users)], batch_size=5000
        )
        through = User.groups.through
        through.objects.bulk_create(
            [through(user_id=u.pk, group_id=groups[i % len(groups)].pk) for i, u in enumerate(made)],
            batch_size=5000,
        )
        Budget.objects.bulk_create(
            [Budget(user=u, period="monthly", limit_usd=Decimal(50)) for u in made[:100]]
        )
        per_user = 20
        conversations = Conversation.objects.bulk_create(
            [Conversation(user=u, title=f"Bench {u.username} #{k}") for u in made for k in range(per_user)],
            batch_size=5000,
        )
        self.stdout.write(f"users, groups, conversations: {time.perf_counter() - started:.1f} s")
        rng = random.Random(42)
        table = price_table()
        prices = {model: prices_of(model, table) for model, _ in MODELS}
        snapshots = {model: p.snapshot() for model, p in prices.items()}
        names = [m for m, _ in MODELS]
        weights = [w for _, w in MODELS]
        now = timezone.now()
        span = days * 86400
        t0 = time.perf_counter()
        with connection.cursor() as cursor:
            raw = cursor.cursor  # psycopg's cursor, for COPY
            with raw.copy(f"COPY chat_message ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for i in range(messages):
                    model = rng.choices(names, weights)[0]
                    usage = TokenUsage(
                        input=rng.randint(10, 3000),
                        output=rng.randint(20, 1500),
                        cache_creation=rng.choice((0, 0, 0, rng.randint(1024, 8000))),
                        cache_read=rng.choice((0, rng.randint(1024, 30000))),
                    )
                    failed = rng.random() < 0.02
                    finished = now - timedelta(seconds=rng.random() * span)
                    ttft = int(rng.lognormvariate(6.5, 0.6))
                    copy.write_row(
                        (
                            conversations[i % len(conversations)].pk,
                            "assistant",
                            "bench reply",
                            "[]",
                            "",
                            "error" if failed else "complete",
                            "overloaded" if failed else "",
                            "",
                            model,
                            "" if failed else "end_turn",
                            usage.input,
                            usage.output,
                            usage.cache_creation,
                            usage.cache_read,
                            cost_of(usage, prices[model]),
                            json.dumps(snapshots[model]),
                            ttft,
                            ttft + rng.randint(200, 20000),
                            finished - timedelta(seconds=20),
                            finished,
                            False,
                            0,
                        )
                    )
        self.stdout.write(f"COPY {messages:,} replies: {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        rows = rebuild_rollup()
        self.stdout.write(f"rollup rebuilt: {rows:,} rows in {time.perf_counter() - t0:.1f} s")
        with connection.cursor() as cursor:
            for name in (
                "chat_message",
                "chat_conversation",
                "usage_usagedaily",
                "auth_user",
                "auth_user_groups",
            ):
                cursor.execute(f"VACUUM ANALYZE {name}")
        self.stdout.write(f"generated in {time.perf_counter() - started:.1f} s")

    def measure(self, repeat: int, days: int) -> None:
        today = timezone.localdate()
        heavy = (
            User.objects.filter(username__startswith="bench-")
            .annotate(total=Sum("usage_days__cost"))
            .order_by("-total")
            .first()
        )
        if heavy is None:
            raise CommandError("No bench data: run without --skip-generate first.")
        month_start, month_end = selectors.month_bounds(today)
        since = datetime.combine(today - timedelta(days=29), datetime.min.time())
        cases: list[tuple[str, Callable[[], object]]] = [
            (
                "dashboard, last 30 days",
                lambda: selectors.dashboard(start=today - timedelta(days=29), end=today),
            ),
            (
                f"dashboard, last {days} days",
                lambda: selectors.dashboard(start=today - timedelta(days=days - 1), end=today),
            ),
            (
                "per-user CSV, last 30 days (all users)",
                lambda: selectors.user_totals(start=today - timedelta(days=29), end=today),
            ),
            (
                "usage_report, this month",
                lambda: selectors.report(start=month_start, end=month_end),
            ),
            ("usage page, heaviest user", lambda: selectors.user_usage(user=heavy)),
            ("budget check before a send", lambda: budget_statuses(user_id=heavy.pk)),
            (
                "for comparison: per-user spend from chat_message, 30 days",
                lambda: list(
                    Message.objects.filter(finished_at__gte=timezone.make_aware(since))
                    .values("conversation__user_id")
                    .annotate(cost=Sum("cost"))
                ),
            ),
        ]
        total = Message.objects.count()
        self.stdout.write(f"\n{total:,} messages; median of {repeat} runs (first run discarded):")
        for label, run in cases:
            run()  # warm the cache: the figures are for a warm database, as in service
            timings = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                run()
                timings.append((time.perf_counter() - t0) * 1000)
            self.stdout.write(f"  {label:<58} {statistics.median(timings):8.1f} ms  (max {max(timings):.1f})")
