"""Reads, always scoped to the requesting user: another user's objects simply do not exist (404)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
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


def split_prefill(blocks: list[dict[str, Any]], content: str) -> tuple[list[dict[str, Any]], str]:
    """A reply's saved tool rounds, and the trailing text that a Continue extends (its prefill)."""
    if not blocks:
        return [], content.rstrip()
    last = blocks[-1]
    if last["role"] == "assistant" and all(b["type"] == "text" for b in last["content"]):
        return blocks[:-1], "".join(b["text"] for b in last["content"]).rstrip()
    return blocks, ""


def _append(history: list[dict[str, Any]], role: str, content: str | list[dict[str, Any]]) -> None:
    """Add a turn; consecutive turns of one role (a tool_result, then the user's next text) become one."""
    if history and history[-1]["role"] == role:
        previous = history[-1]["content"]
        as_blocks = [{"type": "text", "text": previous}] if isinstance(previous, str) else list(previous)
        new = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        history[-1] = {"role": role, "content": as_blocks + new}
    else:
        history.append({"role": role, "content": content})


def provider_history(*, reply: Message) -> tuple[list[dict[str, Any]], str, str]:
    """The messages to send for `reply`: everything visible before it (tool rounds exactly as saved), then,
    for Continue, its own earlier rounds and partial text."""
    conversation = reply.conversation
    history: list[dict[str, Any]] = []
    earlier = conversation.messages.filter(superseded=False, pk__lt=reply.pk).order_by("created_at", "id")
    for message in earlier:
        if message.blocks:
            for turn in message.blocks:
                _append(history, turn["role"], turn["content"])
            continue
        text = message.content if message.role == Message.Role.USER else message.content.rstrip()
        if text.strip():  # an empty failed reply would be rejected by the API
            _append(history, message.role, text)
    rounds, prefill = split_prefill(reply.blocks, reply.content)
    for turn in rounds:
        _append(history, turn["role"], turn["content"])
    if prefill:
        _append(history, "assistant", prefill)
    system = conversation.system_prompt or settings.CHAT_SYSTEM_PROMPT
    return history, system, conversation.model or settings.CHAT_MODEL
