"""Budgets: what a user may still spend, and the checks before each upstream call.

Rules (each has a test):
- Every budget that applies to a user is enforced — their own, and each of their groups'. A group budget
  is per member, or `pooled`: the members' spend together (a team budget). So the tightest one wins.
- Spend is read from the daily rollup (finished attempts, deleted conversations included).
- Before a reply starts (send, new conversation, Retry, Continue), the caller holds a lock on the user's
  row, and the reply is accepted only while spent + reserved < limit for every budget, where each reply
  still streaming reserves the most one round of its output can cost (CHAT_MAX_TOKENS at its model's
  output price; CHAT_MAX_TOKENS tokens for token budgets). Two sends at the last cent are serialized by
  the lock, and the second sees the first's reservation. A pooled budget counts every member's spend and
  reservations, and its own row is locked too (after the user row, in id order), so two members at the
  group's last cent are serialized the same way.
- Before each later tool round, the reply itself checks spent + its own usage so far < limit (real
  spend only; other replies' reservations do not end a reply already running). A round already streaming
  always finishes."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q, Sum
from django.utils import timezone

from chat.errors import ReplyFailure
from usage.accounting import price_table, prices_of
from usage.models import Budget, UsageDaily
from usage.pricing import TokenUsage, cost_of


def period_start(period: str, today: date) -> date:
    return today.replace(day=1) if period == Budget.Period.MONTHLY else today


def period_end(period: str, today: date) -> date:
    """The first day of the next period: when the budget resets."""
    if period == Budget.Period.DAILY:
        return today + timedelta(days=1)
    last = calendar.monthrange(today.year, today.month)[1]
    return today.replace(day=last) + timedelta(days=1)


def format_usd(amount: Decimal) -> str:
    """Dollars for people: cents, or more places for amounts under a cent."""
    if amount and abs(amount) < Decimal("0.01"):
        return f"${amount.quantize(Decimal('0.0001'))}"
    return f"${amount.quantize(Decimal('0.01')):,}"


@dataclass(frozen=True)
class BudgetStatus:
    """One applicable budget measured now. Amounts are dollars, or tokens for a token budget."""

    budget_id: int
    period: str
    in_tokens: bool
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    group_name: str  # empty for the user's own budget
    resets_on: date
    pooled: bool = False  # a group budget counting all its members' spend

    @property
    def used(self) -> Decimal:
        return self.spent + self.reserved

    @property
    def remaining(self) -> Decimal:
        return max(Decimal(0), self.limit - self.used)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    @property
    def fraction_left(self) -> float:
        return float(self.remaining / self.limit) if self.limit > 0 else 0.0

    @property
    def percent_used(self) -> int:
        return min(100, round(100 - self.fraction_left * 100))

    def amount(self, value: Decimal) -> str:
        return f"{int(value):,} tokens" if self.in_tokens else format_usd(value)

    @property
    def label(self) -> str:
        owner = f"The {self.group_name} group's" if self.group_name else "Your"
        per = (" shared by its members" if self.pooled else " per member") if self.group_name else ""
        return f"{owner} {self.period} budget of {self.amount(self.limit)}{per}"

    @property
    def resets_text(self) -> str:
        return f"It resets on {self.resets_on:%-d %B %Y} at 00:00 ({settings.TIME_ZONE})."

    def refusal(self) -> str:
        """Why nothing can start now, and when it can again."""
        if self.spent >= self.limit:
            return f"{self.label} is used up, so this message was not sent. {self.resets_text}"
        return (
            f"{self.label} is nearly used up, and replies still being written may use the rest, so this "
            f"message was not sent. Wait for them to finish, or: {self.resets_text}"
        )

    def stopped(self) -> str:
        """Why a reply ended before its next tool round."""
        return f"{self.label} ran out, so the reply stopped before its next step. {self.resets_text}"

    @property
    def short(self) -> str:
        return f"{self.amount(self.remaining)} left of {self.label[0].lower()}{self.label[1:]}"


def applicable_budgets(*, user_id: int) -> list[Budget]:
    return list(
        Budget.objects.filter(Q(user_id=user_id) | Q(group__user__id=user_id))
        .select_related("group")
        .distinct()
    )


@dataclass(frozen=True)
class Spend:
    month_cost: Decimal
    month_tokens: int
    day_cost: Decimal
    day_tokens: int


def spend(*, user_ids: Sequence[int], today: date) -> Spend:
    """This month's and today's finished spend of these users together, in one query on the rollup."""
    month = Q(day__gte=today.replace(day=1), day__lte=today)
    day = Q(day=today)
    tokens = (
        Sum("input_tokens") + Sum("output_tokens") + Sum("cache_creation_tokens") + Sum("cache_read_tokens")
    )
    row = UsageDaily.objects.filter(month, user_id__in=user_ids).aggregate(
        month_cost=Sum("cost"),
        month_tokens=tokens,
        day_cost=Sum("cost", filter=day),
        day_tokens=(
            Sum("input_tokens", filter=day)
            + Sum("output_tokens", filter=day)
            + Sum("cache_creation_tokens", filter=day)
            + Sum("cache_read_tokens", filter=day)
        ),
    )
    return Spend(
        month_cost=row["month_cost"] or Decimal(0),
        month_tokens=row["month_tokens"] or 0,
        day_cost=row["day_cost"] or Decimal(0),
        day_tokens=row["day_tokens"] or 0,
    )


def reservations(*, user_ids: Sequence[int], exclude_reply_id: int | None = None) -> tuple[Decimal, int]:
    """What these users' replies still streaming may cost: per reply, one round's maximum output."""
    from chat.models import Message

    streaming = Message.objects.filter(status=Message.Status.STREAMING, conversation__user_id__in=user_ids)
    if exclude_reply_id is not None:
        streaming = streaming.exclude(pk=exclude_reply_id)
    models = list(streaming.values_list("model", flat=True))
    if not models:
        return Decimal(0), 0
    table = price_table()
    max_tokens = settings.CHAT_MAX_TOKENS
    usd = sum((cost_of(TokenUsage(output=max_tokens), prices_of(m, table)) for m in models), Decimal(0))
    return usd, max_tokens * len(models)


def budget_statuses(
    *,
    user_id: int,
    extra_cost: Decimal = Decimal(0),
    extra_tokens: int = 0,
    reserve: bool = True,
    exclude_reply_id: int | None = None,
    lock_pooled: bool = False,
) -> list[BudgetStatus]:
    """Every budget applying to the user, measured now. `extra_*`: usage not yet in the rollup (the running
    reply's own rounds). `reserve`: count replies still streaming (see the module's rules). `lock_pooled`:
    lock the pooled budgets' rows first (inside the caller's transaction)."""
    budgets = applicable_budgets(user_id=user_id)
    if not budgets:
        return []
    if lock_pooled and any(b.pooled for b in budgets):
        pooled_ids = sorted(b.pk for b in budgets if b.pooled)
        list(Budget.objects.select_for_update().filter(pk__in=pooled_ids).order_by("pk").values_list("pk"))
    today = timezone.localdate()
    measured: dict[tuple[int, ...], tuple[Spend, Decimal, int]] = {}

    def usage_of(user_ids: tuple[int, ...]) -> tuple[Spend, Decimal, int]:
        if user_ids not in measured:
            reserved = (
                reservations(user_ids=user_ids, exclude_reply_id=exclude_reply_id)
                if reserve
                else (Decimal(0), 0)
            )
            measured[user_ids] = (spend(user_ids=user_ids, today=today), *reserved)
        return measured[user_ids]

    statuses = []
    for budget in budgets:
        members = (
            tuple(sorted(budget.group.user_set.values_list("pk", flat=True)))
            if budget.pooled and budget.group is not None
            else (user_id,)
        )
        used, reserved_usd, reserved_tokens = usage_of(members)
        monthly = budget.period == Budget.Period.MONTHLY
        in_tokens = budget.limit_tokens is not None
        if in_tokens:
            spent = Decimal((used.month_tokens if monthly else used.day_tokens) + extra_tokens)
            reserved = Decimal(reserved_tokens)
            limit = Decimal(budget.limit_tokens or 0)
        else:
            spent = (used.month_cost if monthly else used.day_cost) + extra_cost
            reserved = reserved_usd
            limit = budget.limit_usd or Decimal(0)
        statuses.append(
            BudgetStatus(
                budget_id=budget.pk,
                period=budget.period,
                in_tokens=in_tokens,
                limit=limit,
                spent=spent,
                reserved=reserved,
                group_name=budget.group.name if budget.group else "",
                resets_on=period_end(budget.period, today),
                pooled=budget.pooled,
            )
        )
    return statuses


def tightest(statuses: list[BudgetStatus]) -> BudgetStatus | None:
    """The budget closest to running out (the smallest fraction left); ties go to the later reset."""
    if not statuses:
        return None
    return min(statuses, key=lambda s: (s.fraction_left, -s.resets_on.toordinal()))


def check_can_start(*, user_id: int) -> bool:
    """Raise a ValidationError saying which budget is used up and when it resets; else return whether any
    budget applies to the user (a caller showing the budget notice next need not look when none does).
    The caller holds the user's row lock (`SELECT … FOR UPDATE`, taken by chat.services before anything
    else; SQLite's IMMEDIATE transactions serialize every writer anyway) inside its transaction, so the
    check and the new reply row commit together."""
    statuses = budget_statuses(user_id=user_id, lock_pooled=True)
    blocking = [s for s in statuses if s.exhausted]
    if blocking:
        # Of several exhausted budgets, name the one that resets last: until then nothing can be sent.
        worst = max(blocking, key=lambda s: s.resets_on)
        raise ValidationError(worst.refusal(), code="budget")
    return bool(statuses)


def check_next_round(
    *, reply_id: int, user_id: int, model: str, usage_so_far: TokenUsage
) -> ReplyFailure | None:
    """Before a later tool round: a failure to end the reply with, if a budget is used up."""
    cost = cost_of(usage_so_far, prices_of(model))
    statuses = budget_statuses(
        user_id=user_id,
        extra_cost=cost,
        extra_tokens=usage_so_far.total,
        reserve=False,
        exclude_reply_id=reply_id,
    )
    blocking = [s for s in statuses if s.exhausted]
    if not blocking:
        return None
    worst = max(blocking, key=lambda s: s.resets_on)
    return ReplyFailure("budget", worst.stopped())


def resets_at(status: BudgetStatus) -> datetime:
    return timezone.make_aware(datetime.combine(status.resets_on, time.min))
