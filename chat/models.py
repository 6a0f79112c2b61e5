"""Conversations and their messages. An assistant reply is a row from the moment it is requested, so a
partial answer is never only in memory."""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath
from typing import Any, cast

from django.conf import settings
from django.core.files.storage import Storage, storages
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver
from django.utils.functional import LazyObject, empty


class Conversation(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=100, blank=True, help_text="Empty means the site default.")
    system_prompt = models.TextField(blank=True, help_text="Empty means the site default.")
    # Extended thinking: the budget_tokens of each reply, or None for no thinking.
    thinking_budget = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    # The last message of the visible path (the branch on screen); its ancestors are the transcript and
    # exactly the history sent to the model. Null only for a conversation without messages.
    current = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    pinned = models.BooleanField(default=False)

    class Meta:
        ordering = ["-pinned", "-updated_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-updated_at"], name="conv_user_recent"),
            models.Index(fields=["user", "-pinned", "-updated_at", "-id"], name="conv_user_pinned_recent"),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        STOPPED = "stopped", "Stopped by user"
        INCOMPLETE = "incomplete", "Incomplete"
        ERROR = "error", "Error"
        INTERRUPTED = "interrupted", "Interrupted"

    # Statuses after which a reply can be retried or continued.
    CUT_OFF = (Status.STOPPED, Status.INCOMPLETE, Status.ERROR, Status.INTERRUPTED)

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    # The previous message on its path; messages sharing a parent (and role) are alternatives: an edited
    # question, a regenerated reply. Null for the first message(s) of a conversation.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children", editable=False
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    # The text shown on the page (all rounds); stream offsets count characters of it.
    content = models.TextField(blank=True)
    # With tool use: the whole exchange as Messages API turns (assistant text/tool_use, user tool_result),
    # replayed verbatim in the next request's history.
    blocks = models.JSONField(default=list, blank=True)
    # Extended thinking as shown on the page (all rounds, redactions marked). What is replayed to the API is
    # in `blocks` (thinking blocks with their signatures, redacted_thinking blocks), never this text.
    thinking = models.TextField(blank=True)
    # A remark shown under a finished reply, e.g. that the tool-round limit was reached.
    note = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE, db_index=True)
    # Plain-words cause shown under a cut-off reply, and a short machine code for it (e.g. "overloaded").
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    model = models.CharField(max_length=100, blank=True)
    stop_reason = models.CharField(max_length=40, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Prompt caching: tokens written to and read from the cache (billed at their own prices), summed over
    # tool rounds and every attempt (Continue adds to them), cut-off rounds included.
    cache_creation_tokens = models.PositiveIntegerField("cache write tokens", null=True, blank=True)
    cache_read_tokens = models.PositiveIntegerField("cache read tokens", null=True, blank=True)
    # What this reply was billed, in US dollars, exactly; and the prices ($ per million tokens) applied
    # to its latest attempt, so that a later price change never rewrites history.
    cost = models.DecimalField("cost (USD)", max_digits=14, decimal_places=8, null=True, blank=True)
    prices = models.JSONField("prices applied ($/Mtok)", default=dict, blank=True)
    ttft_ms = models.PositiveIntegerField("time to first token (ms)", null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The generating process renews this lease while it works; a streaming row whose lease has lapsed
    # belongs to a dead process and is marked interrupted by any live one.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    stop_requested = models.BooleanField(default=False)
    # Older turns left out of this reply's request to fit the model's context window (0: none).
    context_dropped = models.PositiveIntegerField(default=0)

    # Set by selectors.transcript: this message's place among its alternatives (a selectors.Branches).
    branches: Any = None
    # Set by Share.messages: the names of the attachments a shared copy leaves out.
    shared_attachments: list[str] | None = None

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="msg_conv_order"),
            models.Index(fields=["status", "lease_expires_at"], name="msg_status_lease"),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk} ({self.status})"

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING

    @property
    def is_cut_off(self) -> bool:
        return self.status in self.CUT_OFF

    @property
    def can_continue(self) -> bool:
        return self.is_cut_off and bool(self.content.strip())

    def remember_attachments(self, attachments: list[Attachment]) -> None:
        """Make `self.attachments.all()` return `attachments` without a query, as `prefetch_related` would:
        for a message just written with them (its page and its reply's first request then read none)."""
        # A plain queryset, not `self.attachments.all()`: the related manager's queryset names `self` in
        # its hints, which would make the message and its cache a reference cycle (freed only by a full
        # collection).
        queryset = Attachment.objects.filter(message_id=self.pk)
        queryset._result_cache = attachments  # what Django's prefetch_related_objects itself sets
        queryset._prefetch_done = True  # type: ignore[attr-defined]
        cache = getattr(self, "_prefetched_objects_cache", {})
        self._prefetched_objects_cache = {**cache, "attachments": queryset}

    def parts(self) -> list[dict[str, Any]]:
        """What the page shows, in order: slices of `content` (joined, they equal it exactly) and, where a
        tool round ended, its tool calls with their results."""
        if not self.blocks:
            return [{"kind": "text", "text": self.content}] if self.content else []
        results: dict[str, dict[str, Any]] = {}
        for turn in self.blocks:
            if turn["role"] == "user":
                for block in turn["content"]:
                    if block.get("type") == "tool_result":
                        results[block["tool_use_id"]] = block
        parts: list[dict[str, Any]] = []
        position = 0
        for turn in self.blocks:
            if turn["role"] != "assistant":
                continue
            round_text = "".join(b["text"] for b in turn["content"] if b["type"] == "text")
            found = self.content.find(round_text, position) if round_text else position
            end = (found if found >= 0 else position) + len(round_text)
            if end > position:
                parts.append({"kind": "text", "text": self.content[position:end]})
                position = end
            for block in turn["content"]:
                if block["type"] == "tool_use":
                    result = results.get(block["id"], {})
                    parts.append(
                        {
                            "kind": "tool",
                            "id": block["id"],
                            "name": block["name"],
                            "input": block["input"],
                            "result": result.get("content"),
                            "is_error": bool(result.get("is_error")),
                        }
                    )
        if position < len(self.content):
            parts.append({"kind": "text", "text": self.content[position:]})
        return parts


class _AttachmentsStorage(LazyObject):
    """The `attachments` storage of settings.STORAGES (local disk under DATA_DIR, or S3-compatible), looked
    up when first used and again after STORAGES changes (as Django's own `default_storage` is)."""

    def _setup(self) -> None:
        self._wrapped = storages["attachments"]


_attachments = _AttachmentsStorage()


@receiver(setting_changed, dispatch_uid="chat.attachments_storage_reset")
def _reset_attachments_storage(*, setting: str, **kwargs: Any) -> None:
    if setting == "STORAGES":
        _attachments._wrapped = empty  # type: ignore[assignment]


def attachments_storage() -> Storage:
    return cast(Storage, _attachments)


def attachment_path(instance: Attachment, filename: str) -> str:
    # A random name: nothing about the user's file name reaches the file system or the bucket.
    suffix = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}.get(
        instance.media_type, ".pdf"
    )
    return str(PurePosixPath(f"u{instance.owner_id}") / f"{uuid.uuid4().hex}{suffix}")


def thumbnail_path(instance: Attachment, filename: str) -> str:
    return str(PurePosixPath(f"u{instance.owner_id}") / f"{uuid.uuid4().hex}.thumb.webp")


class Attachment(models.Model):
    """An image or PDF a user attached. Pending (message None) from upload until it is sent with a message.

    Invariant: the file's bytes were checked by content (chat.attachments.inspect) before the row existed;
    `media_type` is what the content is, never what the name or the browser claimed."""

    class Kind(models.TextChoices):
        IMAGE = "image", "Image"
        PDF = "pdf", "PDF"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments")
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="attachments", null=True, blank=True
    )
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="attachments", null=True, blank=True
    )
    file = models.FileField(upload_to=attachment_path, storage=attachments_storage, max_length=200)
    # Images only: a small WebP preview for the transcript (the original is one click away).
    thumbnail = models.FileField(
        upload_to=thumbnail_path, storage=attachments_storage, max_length=200, blank=True
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    media_type = models.CharField(max_length=40)
    original_name = models.CharField(max_length=200)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    pages = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.original_name

    @property
    def is_image(self) -> bool:
        return self.kind == self.Kind.IMAGE

    @property
    def description(self) -> str:
        """A short human summary, e.g. "PNG · 640x480 · 12 KB" or "PDF · 3 pages · 80 KB"."""
        from django.template.defaultfilters import filesizeformat

        if self.is_image:
            kind = self.media_type.removeprefix("image/").upper()
            return f"{kind} · {self.width}×{self.height} · {filesizeformat(self.size)}"  # noqa: RUF001
        pages = "1 page" if self.pages == 1 else f"{self.pages} pages"
        return f"PDF · {pages} · {filesizeformat(self.size)}"


class Share(models.Model):
    """A read-only link to a snapshot of a conversation: the visible path when it was made, copied, so later
    edits, branches or messages never show through it. Anyone with the unguessable token can read it until
    the owner revokes it (then it is a 404)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="shares")
    token = models.CharField(max_length=64, unique=True, editable=False)
    title = models.CharField(max_length=200, blank=True)
    # The copied path: [{"role", "content", "blocks", "status", "error_message", "note"}, ...]
    snapshot = models.JSONField(default=list, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Share of {self.title or self.conversation_id} ({'revoked' if self.revoked_at else 'active'})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def messages(self) -> list[Message]:
        """The snapshot as unsaved Message objects, for the same rendering as the conversation page."""
        fields = ("role", "content", "blocks", "status", "error_message", "note")
        messages = []
        for item in self.snapshot:
            message = Message(**{name: item.get(name, "") for name in fields})
            message.shared_attachments = item.get("attachments", [])
            messages.append(message)
        return messages
