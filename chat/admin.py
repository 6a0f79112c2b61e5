"""Staff review: conversations with their messages read-only and in order, and every reply's numbers."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet, Sum
from django.http import HttpRequest

from chat.models import Conversation, Message

MESSAGE_FIELDS = (
    "role",
    "status",
    "content",
    "error_message",
    "model",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "ttft_ms",
    "duration_ms",
    "superseded",
    "created_at",
)


class MessageInline(admin.StackedInline):
    model = Message
    fields = MESSAGE_FIELDS
    readonly_fields = MESSAGE_FIELDS
    ordering = ("created_at", "id")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "user",
        "model",
        "message_count",
        "input_tokens",
        "output_tokens",
        "updated_at",
    )
    list_filter = ("messages__status", "model", "user", "created_at")
    search_fields = ("title", "messages__content")
    readonly_fields = ("user", "created_at", "updated_at")
    inlines = (MessageInline,)
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return (
            super()
            .get_queryset(request)
            .select_related("user")
            .annotate(
                total_input=Sum("messages__input_tokens"),
                total_output=Sum("messages__output_tokens"),
            )
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Conversation], search_term: str
    ) -> tuple[QuerySet[Conversation], bool]:
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), False

    @admin.display(description="messages")
    def message_count(self, obj: Conversation) -> int:
        return obj.messages.count()

    @admin.display(description="input tokens", ordering="total_input")
    def input_tokens(self, obj: Conversation) -> int:
        return getattr(obj, "total_input", None) or 0

    @admin.display(description="output tokens", ordering="total_output")
    def output_tokens(self, obj: Conversation) -> int:
        return getattr(obj, "total_output", None) or 0


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "conversation",
        "role",
        "status",
        "model",
        "input_tokens",
        "output_tokens",
        "ttft_ms",
        "duration_ms",
        "created_at",
    )
    list_filter = ("status", "role", "model", "created_at")
    search_fields = ("content", "conversation__title")
    readonly_fields = (
        *MESSAGE_FIELDS,
        "conversation",
        "error_code",
        "finished_at",
        "lease_expires_at",
        "stop_requested",
    )
    list_select_related = ("conversation",)
