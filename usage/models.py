"""Prices, budgets and the daily usage rollup. A reply's own tokens and cost live on `chat.Message`; this app
keeps what outlives a conversation (spend is never forgotten when a conversation is deleted) and what must
stay fast at millions of messages."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

# First-token time histogram: the upper bound (ms) of each bucket; the last bucket has none.
TTFT_BUCKETS_MS: tuple[int, ...] = (100, 250, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000)
TTFT_FIELDS: tuple[str, ...] = (*(f"ttft_le_{bound}" for bound in TTFT_BUCKETS_MS), "ttft_over")


class ModelPrice(models.Model):
    """A price set by staff in the admin; it wins over the CHAT_PRICES setting for that model (and the
    dated model ids that start with its name). Changing it never changes a stored reply's cost."""

    model = models.CharField(max_length=100, unique=True)
    input = models.DecimalField(
        "input $/Mtok", max_digits=12, decimal_places=4, validators=[MinValueValidator(0)]
    )
    output = models.DecimalField(
        "output $/Mtok", max_digits=12, decimal_places=4, validators=[MinValueValidator(0)]
    )
    cache_write = models.DecimalField(
        "cache write $/Mtok", max_digits=12, decimal_places=4, validators=[MinValueValidator(0)]
    )
    cache_read = models.DecimalField(
        "cache read $/Mtok", max_digits=12, decimal_places=4, validators=[MinValueValidator(0)]
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return f"{self.model}: ${self.input} in / ${self.output} out per Mtok"


class Budget(models.Model):
    """A spending cap for one user, or for a Django group: either for each member separately, or, `pooled`,
    for the members' spend together (a team budget). Every budget that applies to a user is enforced, so the
    tightest one wins."""

    class Period(models.TextChoices):
        DAILY = "daily", "Daily"
        MONTHLY = "monthly", "Monthly"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    period = models.CharField(max_length=10, choices=Period.choices, default=Period.MONTHLY)
    limit_usd = models.DecimalField(
        "limit (USD)",
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
    )
    limit_tokens = models.PositiveBigIntegerField(
        "limit (tokens)", null=True, blank=True, help_text="All tokens: input, output, cache write and read."
    )
    pooled = models.BooleanField(
        "shared by the group",
        default=False,
        db_default=False,  # rows written outside the ORM (SQL, older code mid-deploy) are per member
        help_text="Group budgets only: the members' spend counts together (a team budget). Unticked, each "
        "member has this budget for themselves.",
    )
    note = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False)
                ),
                name="budget_user_xor_group",
                violation_error_message="A budget is for a user or for a group, not both.",
            ),
            models.CheckConstraint(
                condition=(
                    Q(limit_usd__isnull=False, limit_tokens__isnull=True)
                    | Q(limit_usd__isnull=True, limit_tokens__isnull=False)
                ),
                name="budget_usd_xor_tokens",
                violation_error_message="A budget limits dollars or tokens: set exactly one.",
            ),
            models.CheckConstraint(
                condition=Q(pooled=False) | Q(group__isnull=False),
                name="budget_pooled_needs_group",
                violation_error_message="Only a group's budget can be shared by its members.",
            ),
        ]

    def __str__(self) -> str:
        shared = " (shared)" if self.pooled else ""
        who = f"user {self.user}" if self.user_id else f"group {self.group}{shared}"
        limit = f"${self.limit_usd}" if self.limit_usd is not None else f"{self.limit_tokens:,} tokens"
        return f"{self.get_period_display()} {limit} for {who}"


class UsageDaily(models.Model):
    """One row per (day, user, model): what finished replies used and cost that day. Maintained in the same
    transaction that finishes a reply (each attempt — first run, Continue — adds its own part), so its
    totals always equal the sum of the replies' billed usage, deleted conversations included."""

    day = models.DateField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_days")
    model = models.CharField(max_length=100)
    replies = models.PositiveIntegerField(default=0)  # finished attempts
    errors = models.PositiveIntegerField(default=0)  # attempts that ended in an error
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))
    ttft_count = models.PositiveIntegerField(default=0)
    ttft_sum_ms = models.PositiveBigIntegerField(default=0)
    ttft_le_100 = models.PositiveIntegerField(default=0)
    ttft_le_250 = models.PositiveIntegerField(default=0)
    ttft_le_500 = models.PositiveIntegerField(default=0)
    ttft_le_750 = models.PositiveIntegerField(default=0)
    ttft_le_1000 = models.PositiveIntegerField(default=0)
    ttft_le_1500 = models.PositiveIntegerField(default=0)
    ttft_le_2000 = models.PositiveIntegerField(default=0)
    ttft_le_3000 = models.PositiveIntegerField(default=0)
    ttft_le_5000 = models.PositiveIntegerField(default=0)
    ttft_le_10000 = models.PositiveIntegerField(default=0)
    ttft_le_30000 = models.PositiveIntegerField(default=0)
    ttft_over = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "usage (daily)"
        constraints = [models.UniqueConstraint(fields=["day", "user", "model"], name="usage_daily_key")]
        indexes = [
            models.Index(fields=["user", "day"], name="usage_daily_user_day"),
            models.Index(fields=["day", "model"], name="usage_daily_day_model"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.user_id} {self.model}: ${self.cost}"

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_tokens + self.cache_read_tokens


def ttft_field(ttft_ms: int) -> str:
    """The histogram column that counts a first-token time of `ttft_ms`."""
    for bound, name in zip(TTFT_BUCKETS_MS, TTFT_FIELDS, strict=False):
        if ttft_ms <= bound:
            return name
    return TTFT_FIELDS[-1]
