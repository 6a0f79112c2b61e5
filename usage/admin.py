"""Staff set prices and budgets here (a change applies to the next upstream call) and read the rollup."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from usage.models import Budget, ModelPrice, UsageDaily


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("model", "input", "output", "cache_write", "cache_read", "updated_at")
    search_fields = ("model",)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "group", "pooled", "period", "limit_usd", "limit_tokens", "updated_at")
    list_filter = ("period", "pooled", "group")
    search_fields = ("user__username", "group__name", "note")
    autocomplete_fields = ("user",)
    fields = ("user", "group", "pooled", "period", "limit_usd", "limit_tokens", "note")


@admin.register(UsageDaily)
class UsageDailyAdmin(admin.ModelAdmin):
    """Read-only: rows are written when replies finish."""

    list_display = (
        "day",
        "user",
        "model",
        "replies",
        "errors",
        "input_tokens",
        "output_tokens",
        "cache_creation_tokens",
        "cache_read_tokens",
        "cost",
    )
    list_filter = ("model", "day")
    search_fields = ("user__username",)
    date_hierarchy = "day"
    list_select_related = ("user",)
    change_list_template = "admin/usage/usagedaily/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageDaily | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageDaily | None = None) -> bool:
        return False
