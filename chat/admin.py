"""Staff review: conversations with their messages read-only and in order, and every reply's numbers."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

from chat.models import Attachment, Conversation, Message, Share
from chat.selectors import transcript

MESSAGE_FIELDS = (
    "role",
    "status",
    "content",
    "thinking",
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
    "parent",
    "context_dropped",
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


def attachment_preview(attachment: Attachment) -> SafeString:
    """A thumbnail (images) or a download link (PDFs), through the authorised view (staff may see all)."""
    url = reverse("chat:attachment_file", args=[attachment.pk])
    if attachment.is_image:
        preview = reverse("chat:attachment_thumbnail", args=[attachment.pk]) if attachment.thumbnail else url
        return format_html(
            '<a href="{}" target="_blank" rel="noopener"><img src="{}" alt="{}" height="80"></a>',
            url,
            preview,
            attachment.original_name,
        )
    return format_html('<a href="{}">{}</a>', url, attachment.original_name)


ATTACHMENT_FIELDS = ("preview", "original_name", "description", "media_type", "size", "sha256", "message")


class AttachmentInline(admin.TabularInline):
    model = Attachment
    fields = ATTACHMENT_FIELDS
    readonly_fields = ATTACHMENT_FIELDS
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    @admin.display(description="file")
    def preview(self, obj: Attachment) -> SafeString:
        return attachment_preview(obj)


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = (
        "original_name",
        "preview",
        "kind",
        "media_type",
        "size",
        "owner",
        "conversation",
        "created_at",
    )
    list_filter = ("kind", "media_type", "created_at")
    search_fields = ("original_name", "sha256", "owner__username")
    readonly_fields = (
        "preview",
        "owner",
        "conversation",
        "message",
        "kind",
        "media_type",
        "original_name",
        "size",
        "sha256",
        "width",
        "height",
        "pages",
        "created_at",
    )
    exclude = ("file",)
    list_select_related = ("owner", "conversation")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="file")
    def preview(self, obj: Attachment) -> SafeString:
        return attachment_preview(obj)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "user",
        "model",
        "message_count",
        "input_tokens",
        "output_tokens",
        "cost",
        "updated_at",
    )
    list_filter = ("messages__status", "model", "user", "created_at")
    search_fields = ("title", "messages__content")
    readonly_fields = ("user", "created_at", "updated_at", "visible_path")
    inlines = (MessageInline, AttachmentInline)  # every message of every branch, each with its parent
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return (
            super()
            .get_queryset(request)
            .select_related("user")
            .annotate(
                total_input=Sum("messages__input_tokens"),
                total_output=Sum("messages__output_tokens"),
                total_cost=Sum("messages__cost"),
            )
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Conversation], search_term: str
    ) -> tuple[QuerySet[Conversation], bool]:
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), False

    @admin.display(description="visible path")
    def visible_path(self, obj: Conversation) -> str:
        """The branch on the user's screen (and sent to the model), as message ids and roles."""
        return format_html_join(
            mark_safe("<br>"),
            "#{} {}: {}",
            ((m.pk, m.role, Truncator(m.content).chars(80)) for m in transcript(conversation=obj)),
        )

    @admin.display(description="messages")
    def message_count(self, obj: Conversation) -> int:
        return obj.messages.count()

    @admin.display(description="input tokens", ordering="total_input")
    def input_tokens(self, obj: Conversation) -> int:
        return getattr(obj, "total_input", None) or 0

    @admin.display(description="output tokens", ordering="total_output")
    def output_tokens(self, obj: Conversation) -> int:
        return getattr(obj, "total_output", None) or 0

    @admin.display(description="cost (USD)", ordering="total_cost")
    def cost(self, obj: Conversation) -> Decimal:
        return getattr(obj, "total_cost", None) or Decimal(0)


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
        "cache_creation_tokens",
        "cache_read_tokens",
        "cost",
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


@admin.register(Share)
class ShareAdmin(admin.ModelAdmin):
    """Every shared link, active or revoked, with its owner and what it shows."""

    list_display = ("__str__", "owner", "conversation", "message_count", "created_at", "revoked_at", "link")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("title", "conversation__title", "conversation__user__username")
    readonly_fields = ("conversation", "title", "link", "snapshot", "created_at")
    fields = ("conversation", "title", "link", "created_at", "revoked_at", "snapshot")
    list_select_related = ("conversation__user",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # links are made by their owners

    @admin.display(description="owner", ordering="conversation__user__username")
    def owner(self, obj: Share) -> str:
        return obj.conversation.user.get_username()

    @admin.display(description="messages")
    def message_count(self, obj: Share) -> int:
        return len(obj.snapshot)

    @admin.display(description="link")
    def link(self, obj: Share) -> str:
        url = reverse("chat:shared", args=[obj.token])
        return format_html('<a href="{}" rel="noreferrer" target="_blank">{}</a>', url, url)
