"""A conversation as Markdown or JSON, for the user to keep."""

from __future__ import annotations

import json
from typing import Any

from chat.models import Conversation, Message
from chat.selectors import transcript


def _message_dict(message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "error": message.error_message or None,
        "model": message.model or None,
        "stop_reason": message.stop_reason or None,
        "input_tokens": message.input_tokens,
        "output_tokens": message.output_tokens,
        "ttft_ms": message.ttft_ms,
        "duration_ms": message.duration_ms,
        "created_at": message.created_at.isoformat(),
    }


def export_json(conversation: Conversation) -> str:
    data = {
        "id": conversation.pk,
        "title": conversation.title,
        "model": conversation.model or None,
        "system_prompt": conversation.system_prompt or None,
        "created_at": conversation.created_at.isoformat(),
        "messages": [_message_dict(m) for m in transcript(conversation=conversation)],
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def export_markdown(conversation: Conversation) -> str:
    parts = [f"# {conversation.title or 'Conversation'}\n"]
    if conversation.system_prompt:
        parts.append(f"> System prompt: {conversation.system_prompt}\n")
    for message in transcript(conversation=conversation):
        who = "You" if message.role == Message.Role.USER else f"Assistant ({message.model})"
        parts.append(f"## {who}\n\n{message.content}\n")
        if message.is_cut_off:
            parts.append(f"_Response was cut off: {message.error_message}_\n")
    return "\n".join(parts)
