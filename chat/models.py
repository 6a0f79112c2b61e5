"""Conversations and their messages. An assistant reply is a row from the moment it is requested, so a
partial answer is never only in memory."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=100, blank=True, help_text="Empty means the site default.")
    system_prompt = models.TextField(blank=True, help_text="Empty means the site default.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["user", "-updated_at"], name="conv_user_recent")]

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
    role = models.CharField(max_length=16, choices=Role.choices)
    # The text shown on the page (all rounds); stream offsets count characters of it.
    content = models.TextField(blank=True)
    # With tool use: the whole exchange as Messages API turns (assistant text/tool_use, user tool_result),
    # replayed verbatim in the next request's history.
    blocks = models.JSONField(default=list, blank=True)
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
    ttft_ms = models.PositiveIntegerField("time to first token (ms)", null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The generating process renews this lease while it works; a streaming row whose lease has lapsed
    # belongs to a dead process and is marked interrupted by any live one.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    stop_requested = models.BooleanField(default=False)
    # A retried reply stays in the database (nothing is lost) but leaves the visible transcript.
    superseded = models.BooleanField(default=False)

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
