"""Reads for the usage page, the staff dashboard and the finance report. Everything aggregate reads the
daily rollup (`UsageDaily`), so each page is a fixed number of queries whatever the number of users or
messages; only "most expensive conversations" reads messages, for one user and one month."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from chat.models import Message
from usage.budgets import BudgetStatus, budget_statuses, period_end, tightest
from usage.charts import Chart, stacked_bars
from usage.models import TTFT_BUCKETS_MS, TTFT_FIELDS, UsageDaily

TOTALS = {
    "replies": Sum("replies"),
    "errors": Sum("errors"),
    "input_tokens": Sum("input_tokens"),
    "output_tokens": Sum("output_tokens"),
    "cache_creation_tokens": Sum("cache_creation_tokens"),
    "cache_read_tokens": Sum("cache_read_tokens"),
    "cost": Sum("cost"),
}


@dataclass(frozen=True)
class Totals:
    replies: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost: Decimal = Decimal(0)

    @classmethod
    def of(cls, row: dict[str, Any]) -> Totals:
        values: dict[str, Any] = {name: row.get(name) or 0 for name in TOTALS}
        values["cost"] = row.get("cost") or Decimal(0)
        return cls(**values)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_tokens + self.cache_read_tokens

    @property
    def error_rate(self) -> float:
        return self.errors / self.replies if self.replies else 0.0


def _rows(queryset: Any) -> list[dict[str, Any]]:
    """Aggregate rows as plain dicts (their keys come from `annotate(**TOTALS)`)."""
    return [dict(row) for row in queryset]


def month_days(today: date) -> list[date]:
    start = today.replace(day=1)
    return [start + timedelta(days=i) for i in range((period_end("monthly", today) - start).days)]


def _aware(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


# --- The user's own page -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpensiveConversation:
    pk: int
    title: str
    cost: Decimal
    tokens: int


@dataclass(frozen=True)
class UserUsage:
    month: date
    totals: Totals
    budgets: list[BudgetStatus]
    tightest: BudgetStatus | None
    chart: Chart
    models: list[tuple[str, Totals]]
    conversations: list[ExpensiveConversation]


def user_usage(*, user: Any, today: date | None = None) -> UserUsage:
    """This month for one user: totals, budgets, the chart by day and model, the costliest conversations."""
    today = today or timezone.localdate()
    start = today.replace(day=1)
    rows = _rows(
        UsageDaily.objects.filter(user=user, day__gte=start, day__lte=today)
        .values("day", "model")
        .annotate(**TOTALS)
        .order_by("day", "model")
    )
    per_model: dict[str, dict[str, Any]] = {}
    for row in rows:
        acc = per_model.setdefault(row["model"], dict.fromkeys(TOTALS, 0))
        for name in TOTALS:
            acc[name] += row[name] or 0
    total = dict.fromkeys(TOTALS, 0)
    for acc in per_model.values():
        for name in TOTALS:
            total[name] += acc[name]
    chart = stacked_bars(
        days=month_days(today), values={(r["day"], r["model"]): r["cost"] or Decimal(0) for r in rows}
    )
    statuses = budget_statuses(user_id=user.pk)
    return UserUsage(
        month=start,
        totals=Totals.of(total),
        budgets=statuses,
        tightest=tightest(statuses),
        chart=chart,
        models=sorted(((m, Totals.of(acc)) for m, acc in per_model.items()), key=lambda p: -p[1].cost),
        conversations=expensive_conversations(user=user, since=start),
    )


def expensive_conversations(*, user: Any, since: date, limit: int = 5) -> list[ExpensiveConversation]:
    rows = (
        Message.objects.filter(
            conversation__user=user, role=Message.Role.ASSISTANT, created_at__gte=_aware(since), cost__gt=0
        )
        .values("conversation_id", "conversation__title")
        .annotate(
            total=Sum("cost"),
            tokens=Sum("input_tokens") + Sum("output_tokens"),
            cache=Sum("cache_creation_tokens") + Sum("cache_read_tokens"),
        )
        .order_by("-total")[:limit]
    )
    return [
        ExpensiveConversation(
            pk=row["conversation_id"],
            title=row["conversation__title"] or f"Conversation {row['conversation_id']}",
            cost=row["total"],
            tokens=(row["tokens"] or 0) + (row["cache"] or 0),
        )
        for row in rows
    ]


def budget_notice(*, user: Any) -> BudgetStatus | None:
    """The tightest budget, when less than CHAT_BUDGET_NOTICE_FRACTION of it is left (for the composer)."""
    status = tightest(budget_statuses(user_id=user.pk))
    if status is None or status.fraction_left >= settings.CHAT_BUDGET_NOTICE_FRACTION:
        return None
    return status


# --- The staff dashboard -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelHealth:
    model: str
    totals: Totals
    ttft_count: int
    ttft_mean_ms: int | None
    p50: str
    p95: str


@dataclass(frozen=True)
class Named:
    key: Any
    name: str
    totals: Totals


@dataclass(frozen=True)
class Dashboard:
    start: date
    end: date
    totals: Totals
    chart: Chart
    days: list[tuple[date, Totals]]
    models: list[ModelHealth]
    users: list[Named]
    groups: list[Named]


def percentile_bucket(counts: list[int], q: float) -> int | None:
    """The index of the histogram bucket holding the q-quantile (0 < q ≤ 1), or None with no data."""
    n = sum(counts)
    if n == 0:
        return None
    rank = q * n
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return index
    return len(counts) - 1  # pragma: no cover - seen reaches n


def bucket_label(index: int | None) -> str:
    """A histogram bucket as a bound people read: "≤ 750 ms", "> 30 s"."""
    if index is None:
        return "-"
    if index >= len(TTFT_BUCKETS_MS):
        return f"> {TTFT_BUCKETS_MS[-1] // 1000} s"
    bound = TTFT_BUCKETS_MS[index]
    return f"≤ {bound} ms" if bound < 1000 else f"≤ {bound / 1000:g} s"


def _period(start: date, end: date) -> QuerySet[UsageDaily]:
    return UsageDaily.objects.filter(day__gte=start, day__lte=end)


def _add(acc: dict[str, Any], row: dict[str, Any], names: tuple[str, ...] | dict[str, Any] = TOTALS) -> None:
    for name in names:
        acc[name] = acc.get(name, 0) + (row[name] or 0)


def _per_user_rows(start: date, end: date) -> list[dict[str, Any]]:
    """One aggregate over the rollup alone, costliest first (no join: PostgreSQL scans the period once)."""
    return _rows(_period(start, end).values("user_id").annotate(**TOTALS).order_by("-cost", "user_id"))


def _named_users(rows: list[dict[str, Any]]) -> list[Named]:
    names = dict(
        get_user_model().objects.filter(pk__in=[r["user_id"] for r in rows]).values_list("pk", "username")
    )
    return [Named(r["user_id"], names.get(r["user_id"], "?"), Totals.of(r)) for r in rows]


def _groups_of(rows: list[dict[str, Any]]) -> list[Named]:
    """Per-group sums of per-user rows: a member of two groups counts in both; "(no group)" for the rest.
    One query for the memberships of the users in `rows`."""
    user_model = get_user_model()
    membership = user_model.groups.through.objects.filter(
        user_id__in=[r["user_id"] for r in rows]
    ).values_list("user_id", "group_id", "group__name")
    groups: dict[int, list[tuple[int | None, str]]] = {}
    for user_id, group_id, name in membership:
        groups.setdefault(user_id, []).append((group_id, name))
    sums: dict[tuple[int | None, str], dict[str, Any]] = {}
    for row in rows:
        for key in groups.get(row["user_id"], [(None, "(no group)")]):
            _add(sums.setdefault(key, {}), row)
    named = [Named(key[0], key[1], Totals.of(acc)) for key, acc in sums.items()]
    return sorted(named, key=lambda item: (-item.totals.cost, item.name))


def user_totals(*, start: date, end: date) -> list[Named]:
    """Spend per user in [start, end], costliest first (two queries)."""
    return _named_users(_per_user_rows(start, end))


def group_totals(*, start: date, end: date) -> list[Named]:
    """Spend of each group's members in [start, end] (two queries)."""
    return _groups_of(_per_user_rows(start, end))


def report(*, start: date, end: date) -> tuple[list[Named], list[Named]]:
    """Per-user and per-group totals from one scan of the period (three queries)."""
    rows = _per_user_rows(start, end)
    return _named_users(rows), _groups_of(rows)


def dashboard(*, start: date, end: date, top_users: int = 50) -> Dashboard:
    """Spend per day, model, user and group, and per-model first-token time and error rate, for
    [start, end]. Four queries whatever the number of users: two scans of the period's rollup rows (per
    day and model, with the histograms; per user), then the shown users' names and their groups."""
    histogram = {name: Sum(name) for name in TTFT_FIELDS}
    by_day_model = _rows(
        _period(start, end)
        .values("day", "model")
        .annotate(**TOTALS, ttft_n=Sum("ttft_count"), ttft_sum=Sum("ttft_sum_ms"), **histogram)
        .order_by("day", "model")
    )
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    per_day: dict[date, dict[str, Any]] = {day: dict.fromkeys(TOTALS, 0) for day in days}
    per_model: dict[str, dict[str, Any]] = {}
    health = ("ttft_n", "ttft_sum", *TTFT_FIELDS)
    for row in by_day_model:
        _add(per_day[row["day"]], row)
        _add(per_model.setdefault(row["model"], {}), row, (*TOTALS, *health))
    total: dict[str, Any] = dict.fromkeys(TOTALS, 0)
    for acc in per_day.values():
        _add(total, acc)
    models = []
    for model, acc in sorted(per_model.items(), key=lambda item: -item[1]["cost"]):
        counts = [acc[name] for name in TTFT_FIELDS]
        n = acc["ttft_n"]
        models.append(
            ModelHealth(
                model=model,
                totals=Totals.of(acc),
                ttft_count=n,
                ttft_mean_ms=round(acc["ttft_sum"] / n) if n else None,
                p50=bucket_label(percentile_bucket(counts, 0.5)),
                p95=bucket_label(percentile_bucket(counts, 0.95)),
            )
        )
    chart = stacked_bars(
        days=days, values={(r["day"], r["model"]): r["cost"] or Decimal(0) for r in by_day_model}
    )
    users = _per_user_rows(start, end)
    return Dashboard(
        start=start,
        end=end,
        totals=Totals.of(total),
        chart=chart,
        days=[(day, Totals.of(acc)) for day, acc in per_day.items()],
        models=models,
        users=_named_users(users[:top_users]),
        groups=_groups_of(users),
    )


# --- The finance report --------------------------------------------------------------------------------


def month_bounds(month: date) -> tuple[date, date]:
    start = month.replace(day=1)
    return start, period_end("monthly", start) - timedelta(days=1)


def active_user_count(*, start: date, end: date) -> int:
    return _period(start, end).aggregate(n=Count("user_id", distinct=True))["n"] or 0
