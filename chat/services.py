"""Every write to conversations and messages. Keyword-only, typed, synchronous; async callers wrap them
in `database_sync_to_async` so a stream never pins a database connection between writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from chat.errors import INTERRUPTED_MESSAGE, ReplyFailure
from chat.models import Conversation, Message

TITLE_LENGTH = 60


def _lease() -> datetime:
    return timezone.now() + timedelta(seconds=settings.CHAT_LEASE_SECONDS)


def title_from_text(text: str) -> str:
    words = " ".join(text.split())
    if len(words) <= TITLE_LENGTH:
        return words
    return words[:TITLE_LENGTH].rsplit(" ", 1)[0].rstrip(" ,.;:") + "…"


def clean_message_text(text: str) -> str:
    """The text to save, or a ValidationError saying in plain words why not."""
    if not text or not text.strip():
        raise ValidationError("Type a message before sending.", code="empty")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ValidationError(
            f"That message is {len(text):,} characters long; the limit is {limit:,}.", code="too_long"
        )
    return text.strip("\r\n")


def conversation_create(
    *, user: User, title: str = "", model: str = "", system_prompt: str = ""
) -> Conversation:
    if model and model not in settings.CHAT_MODELS:
        raise ValidationError("Choose one of the offered models.", code="model")
    return Conversation.objects.create(user=user, title=title[:200], model=model, system_prompt=system_prompt)


def conversation_update(
    *,
    conversation: Conversation,
    title: str | None = None,
    model: str | None = None,
    system_prompt: str | None = None,
) -> Conversation:
    fields = ["updated_at"]
    if title is not None:
        title = " ".join(title.split())
        if not title:
            raise ValidationError("A title cannot be empty.", code="empty")
        conversation.title = title[:200]
        fields.append("title")
    if model is not None:
        if model and model not in settings.CHAT_MODELS:
            raise ValidationError("Choose one of the offered models.", code="model")
        conversation.model = model
        fields.append("model")
    if system_prompt is not None:
        conversation.system_prompt = system_prompt[: settings.CHAT_MAX_MESSAGE_CHARS]
        fields.append("system_prompt")
    conversation.save(update_fields=fields)
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    # A running generation notices its row is gone at its next save and stops.
    Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING).update(
        stop_requested=True
    )
    conversation.delete()


@dataclass(frozen=True)
class SentMessage:
    user_message: Message
    reply: Message


def _check_capacity(conversation: Conversation) -> None:
    streaming = Message.objects.filter(status=Message.Status.STREAMING)
    if streaming.filter(conversation=conversation).exists():
        raise ValidationError(
            "Wait for the current reply to finish, or stop it, before sending.", code="busy"
        )
    limit = settings.CHAT_MAX_CONCURRENT_PER_USER
    if streaming.filter(conversation__user_id=conversation.user_id).count() >= limit:
        replies = "reply" if limit == 1 else "replies"
        raise ValidationError(
            f"You already have {limit} {replies} being written. Wait for one to finish, or stop one.",
            code="capacity",
        )


def _new_reply(conversation: Conversation) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=conversation.model or settings.CHAT_MODEL,
        lease_expires_at=_lease(),
    )


@transaction.atomic
def message_send(*, conversation: Conversation, text: str) -> SentMessage:
    """Commit the user's text and the empty reply row together, before any model is called."""
    text = clean_message_text(text)
    # Lock the conversation row so two concurrent sends cannot both pass the capacity check.
    Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
    _check_capacity(conversation)
    user_message = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=text)
    if not conversation.title:
        conversation.title = title_from_text(text)
    conversation.save(update_fields=["title", "updated_at"])
    return SentMessage(user_message=user_message, reply=_new_reply(conversation))


@transaction.atomic
def conversation_start(*, user: User, text: str, model: str = "") -> SentMessage:
    """A new conversation with its first message, or nothing at all if the message is refused."""
    conversation = conversation_create(user=user, model=model)
    return message_send(conversation=conversation, text=text)


@transaction.atomic
def message_retry(*, reply: Message) -> Message:
    """Regenerate a finished or cut-off reply. The old one is kept, marked superseded."""
    conversation = Conversation.objects.select_for_update().get(pk=reply.conversation_id)
    if reply.role != Message.Role.ASSISTANT or reply.superseded:
        raise ValidationError("Only the latest reply can be retried.", code="not_latest")
    if reply.is_streaming:
        raise ValidationError("This reply is still being written.", code="busy")
    latest = conversation.messages.filter(superseded=False).last()
    if latest is None or latest.pk != reply.pk:
        raise ValidationError("Only the latest reply can be retried.", code="not_latest")
    _check_capacity(conversation)
    Message.objects.filter(pk=reply.pk).update(superseded=True)
    conversation.save(update_fields=["updated_at"])
    return _new_reply(conversation)


@transaction.atomic
def message_continue(*, reply: Message) -> Message:
    """Go on from a cut-off reply's partial text, in the same message."""
    conversation = Conversation.objects.select_for_update().get(pk=reply.conversation_id)
    if not reply.can_continue or reply.superseded:
        raise ValidationError("Only a cut-off reply with some text can be continued.", code="not_cut_off")
    _check_capacity(conversation)
    # The Messages API rejects an assistant prefill that ends in whitespace; the model restores it.
    content = reply.content.rstrip()
    updated = Message.objects.filter(pk=reply.pk, status__in=Message.CUT_OFF).update(
        status=Message.Status.STREAMING,
        content=content,
        error_code="",
        error_message="",
        stop_reason="",
        note="",
        stop_requested=False,
        finished_at=None,
        lease_expires_at=_lease(),
    )
    if not updated:  # someone else continued it first: never run two generations of one reply
        raise ValidationError("This reply is already being continued.", code="busy")
    conversation.save(update_fields=["updated_at"])
    reply.refresh_from_db()
    return reply


def message_request_stop(*, reply: Message) -> bool:
    """Ask the generating process (whichever it is) to stop; it also polls this flag as a fallback."""
    return bool(
        Message.objects.filter(pk=reply.pk, status=Message.Status.STREAMING).update(stop_requested=True)
    )


# --- Writes made by the producer of a reply ------------------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    gone: list[int]  # deleted, or no longer streaming (reaped, finished elsewhere)
    stop_requested: list[int]


@transaction.atomic
def replies_save_batch(*, saves: list[tuple[int, str, int | None]], renew: list[int]) -> BatchResult:
    """One process's periodic save, in one transaction: the partial text (and time to first token) of each
    reply in `saves`, with its lease renewed in the same UPDATE, and a lease-only renewal for `renew`.
    Reports which replies are gone and which a user asked to stop."""
    lease = _lease()
    streaming = Message.objects.filter(status=Message.Status.STREAMING)
    for reply_id, content, ttft_ms in saves:
        fields: dict[str, object] = {"content": content, "lease_expires_at": lease}
        if ttft_ms is not None:
            fields["ttft_ms"] = ttft_ms
        streaming.filter(pk=reply_id).update(**fields)
    if renew:
        streaming.filter(pk__in=renew).update(lease_expires_at=lease)
    ids = [reply_id for reply_id, _, _ in saves] + renew
    alive = dict(streaming.filter(pk__in=ids).values_list("pk", "stop_requested"))
    return BatchResult(
        gone=[reply_id for reply_id in ids if reply_id not in alive],
        stop_requested=[reply_id for reply_id, stop in alive.items() if stop],
    )


def reply_save_blocks(*, reply_id: int, content: str, blocks: list[dict[str, Any]]) -> None:
    """Save a finished tool round (once per round, not per token)."""
    Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
        content=content, blocks=blocks, lease_expires_at=_lease()
    )


def reply_finish(
    *,
    reply_id: int,
    content: str,
    status: str,
    blocks: list[dict[str, Any]] | None = None,
    note: str = "",
    error: ReplyFailure | None = None,
    stop_reason: str | None = None,
    model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    ttft_ms: int | None = None,
    duration_ms: int | None = None,
) -> bool:
    fields: dict[str, object] = {
        "content": content,
        "status": status,
        "error_code": error.code if error else "",
        "error_message": error.message if error else "",
        "stop_reason": stop_reason or "",
        "note": note[:300],
        "finished_at": timezone.now(),
        "lease_expires_at": None,
        "duration_ms": duration_ms,
    }
    if model:
        fields["model"] = model
    if blocks is not None:
        fields["blocks"] = blocks
    if ttft_ms is not None:
        fields["ttft_ms"] = ttft_ms
    # Continue adds to the usage of the attempts before it rather than overwriting it.
    if input_tokens is not None:
        fields["input_tokens"] = Coalesce(F("input_tokens"), 0) + input_tokens
    if output_tokens is not None:
        fields["output_tokens"] = Coalesce(F("output_tokens"), 0) + output_tokens
    return bool(Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(**fields))


def replies_reap_expired(*, exclude: list[int] | tuple[int, ...] = ()) -> list[int]:
    """Mark streaming replies whose lease lapsed (their process died) as interrupted, keeping the text.
    `exclude`: replies this process is generating — alive, whatever their lease says."""
    now = timezone.now()
    stale = Q(status=Message.Status.STREAMING) & (
        Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    )
    ids = list(Message.objects.filter(stale).exclude(pk__in=exclude).values_list("pk", flat=True)[:500])
    if not ids:
        return []
    Message.objects.filter(stale, pk__in=ids).update(
        status=Message.Status.INTERRUPTED,
        error_code="interrupted",
        error_message=INTERRUPTED_MESSAGE,
        finished_at=now,
        lease_expires_at=None,
    )
    return ids
