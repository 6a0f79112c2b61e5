"""Prices in force and the daily rollup: what finishing a reply writes besides the reply itself."""

from __future__ import annotations

import functools
import logging
from datetime import date
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from usage.models import TTFT_BUCKETS_MS, TTFT_FIELDS, ModelPrice, UsageDaily, ttft_field
from usage.pricing import Prices, TokenUsage, prices_for

logger = logging.getLogger(__name__)


def price_table() -> dict[str, Prices]:
    """Per-model prices now: the CHAT_PRICES setting (defaults, or CHAT_PRICES_JSON), then the admin's
    ModelPrice rows, which win."""
    table = {model: Prices.from_mapping(data) for model, data in settings.CHAT_PRICES.items()}
    for row in ModelPrice.objects.all():
        table[row.model] = Prices(row.input, row.output, row.cache_write, row.cache_read)
    return table


def prices_of(model: str, table: dict[str, Prices] | None = None) -> Prices:
    """The prices of `model`; a model with no price is charged as the site's default model (and logged), so
    that an unpriced model never slips past a budget."""
    table = price_table() if table is None else table
    found = prices_for(model, table) or prices_for(settings.CHAT_MODEL, table)
    if found is None:
        raise LookupError(f"No price for {model!r} nor for CHAT_MODEL; add it to CHAT_PRICES.")
    if prices_for(model, table) is None:
        logger.warning("no price for model %r; charged at %s's prices", model, settings.CHAT_MODEL)
    return found


def record_attempt(
    *, user_id: int, model: str, usage: TokenUsage, cost: Decimal, failed: bool, ttft_ms: int | None
) -> None:
    """Add one finished attempt of a reply to today's rollup row (created on first use), in one statement:
    INSERT … ON CONFLICT (day, user, model) DO UPDATE adding each counter (SQLite and PostgreSQL both
    have it). Atomic on either database, so concurrent finishes for the same user, day and model never
    lose a count. Measured: the ORM's get_or_create, then an UPDATE of ten F() expressions, were half the
    CPU of finishing a reply (2-3 statements, most of it building the queries). Call inside the
    transaction that finishes the reply."""
    increments: dict[str, object] = {
        "replies": 1,
        "errors": int(failed),
        "input_tokens": usage.input,
        "output_tokens": usage.output,
        "cache_creation_tokens": usage.cache_creation,
        "cache_read_tokens": usage.cache_read,
        "cost": cost,
        "ttft_count": int(ttft_ms is not None),
        "ttft_sum_ms": ttft_ms or 0,
        **dict.fromkeys(TTFT_FIELDS, 0),
    }
    if ttft_ms is not None:
        increments[ttft_field(ttft_ms)] = 1
    key: dict[str, object] = {"day": timezone.localdate(), "user": user_id, "model": model[:100]}
    fields = {f.name: f for f in UsageDaily._meta.concrete_fields}
    names = [*key, *increments]
    params = [
        fields[name].get_db_prep_save(value, connection) for name, value in {**key, **increments}.items()
    ]
    with connection.cursor() as cursor:
        cursor.execute(_rollup_upsert_sql(connection.vendor, tuple(names), len(key)), params)


@functools.cache
def _rollup_upsert_sql(vendor: str, names: tuple[str, ...], key_length: int) -> str:
    """The upsert of `record_attempt` for these columns (the first `key_length` are the unique key, the rest
    counters to add). Cached per database vendor and column list."""
    quote = connection.ops.quote_name
    fields = {f.name: f for f in UsageDaily._meta.concrete_fields}
    columns = [quote(str(fields[name].column)) for name in names]
    table = quote(UsageDaily._meta.db_table)
    added = ", ".join(f"{column} = {table}.{column} + EXCLUDED.{column}" for column in columns[key_length:])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(columns[:key_length])}) DO UPDATE SET {added}"
    )


def rebuild_rollup(*, since: date | None = None) -> int:
    """Recompute the daily rollup from the replies themselves (a backfill, e.g. for replies saved before
    the rollup existed), in one INSERT … SELECT. Each reply counts as one attempt on the day it finished;
    spend of deleted conversations, which only the rollup kept, is lost for the days rebuilt. Returns the
    number of rows written."""
    from chat.models import Message

    replies = Message.objects.filter(role=Message.Role.ASSISTANT, finished_at__isnull=False)
    rollup = UsageDaily.objects.all()
    if since is not None:
        replies = replies.filter(finished_at__date__gte=since)
        rollup = rollup.filter(day__gte=since)
    buckets: dict[str, Any] = {}
    lower = 0
    for bound, name in zip(TTFT_BUCKETS_MS, TTFT_FIELDS, strict=False):
        buckets[name] = Count(
            "pk", filter=Q(ttft_ms__gt=lower, ttft_ms__lte=bound) if lower else Q(ttft_ms__lte=bound)
        )
        lower = bound
    buckets[TTFT_FIELDS[-1]] = Count("pk", filter=Q(ttft_ms__gt=lower))
    zero = Value(0)
    query = (
        replies.annotate(day=TruncDate("finished_at"))
        .values("day", "conversation__user_id", "model")
        .annotate(
            replies=Count("pk"),
            errors=Count("pk", filter=Q(status=Message.Status.ERROR)),
            input_tokens=Coalesce(Sum("input_tokens"), zero),
            output_tokens=Coalesce(Sum("output_tokens"), zero),
            cache_creation_tokens=Coalesce(Sum("cache_creation_tokens"), zero),
            cache_read_tokens=Coalesce(Sum("cache_read_tokens"), zero),
            cost=Coalesce(
                Sum("cost"), Value(Decimal(0), output_field=DecimalField(max_digits=16, decimal_places=8))
            ),
            ttft_count=Count("ttft_ms"),
            ttft_sum_ms=Coalesce(Sum("ttft_ms"), zero),
            **buckets,
        )
        # Day by day, as the live rollup grows: a period's rows sit together on disk.
        .order_by("day", "conversation__user_id", "model")
    )
    # The SELECT lists the grouped values in values() order, then the aggregates in annotate() order.
    columns = ["day", "user_id", "model", *(name for name in query.query.annotations if name != "day")]
    sql, params = query.query.sql_with_params()
    with transaction.atomic():
        rollup.delete()
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {UsageDaily._meta.db_table} ({', '.join(columns)}) {sql}",
                params,
            )
            return int(cursor.rowcount)
