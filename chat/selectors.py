"""Reads, always scoped to the requesting user: another user's objects simply do not exist (404)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet, Sum
from django.shortcuts import get_object_or_404

from chat.models import Conversation, Message


def conversation_list(*, user: Any, query: str = "") -> QuerySet[Conversation]:
    qs = Conversation.objects.filter(user=user)
    query = query.strip()
    if query:
        qs = qs.filter(
            Q(title__icontains=query) | Q(messages__content__icontains=query, messages__superseded=False)
        ).distinct()
    return qs


def conversation_get(*, user: Any, pk: int) -> Conversation:
    return get_object_or_404(Conversation, pk=pk, user=user)


def message_get(*, user: Any, conversation_pk: int, pk: int) -> Message:
    return get_object_or_404(
        Message.objects.select_related("conversation"),
        pk=pk,
        conversation_id=conversation_pk,
        conversation__user=user,
    )


def transcript(*, conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.filter(superseded=False)


def conversation_usage(*, conversation: Conversation) -> dict[str, int]:
    totals = conversation.messages.aggregate(input=Sum("input_tokens"), output=Sum("output_tokens"))
    return {"input": totals["input"] or 0, "output": totals["output"] or 0}


def provider_history(*, reply: Message) -> tuple[list[dict[str, Any]], str, str]:
    """The messages to send for `reply`: everything visible before it, then its partial text (Continue)."""
    conversation = reply.conversation
    history: list[dict[str, Any]] = []
    for message in conversation.messages.filter(superseded=False, pk__lt=reply.pk).order_by(
        "created_at", "id"
    ):
        text = message.content if message.role == Message.Role.USER else message.content.rstrip()
        if text.strip():  # an empty failed reply would be rejected by the API
            history.append({"role": message.role, "content": text})
    if reply.content.strip():
        history.append({"role": "assistant", "content": reply.content.rstrip()})
    system = conversation.system_prompt or settings.CHAT_SYSTEM_PROMPT
    return history, system, conversation.model or settings.CHAT_MODEL
