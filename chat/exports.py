"""A conversation as Markdown or JSON, for the user to keep."""

from __future__ import annotations

import json
from typing import Any

from chat.models import Attachment, Conversation, Message
from chat.selectors import all_branches, transcript


def _attachment_dict(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.pk,
        "name": attachment.original_name,
        "kind": attachment.kind,
        "media_type": attachment.media_type,
        "size": attachment.size,
        "sha256": attachment.sha256,
        "width": attachment.width,
        "height": attachment.height,
        "pages": attachment.pages,
    }


def _message_dict(message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "parent": message.parent_id,
        "role": message.role,
        "content": message.content,
        "attachments": [_attachment_dict(a) for a in message.attachments.all()],
        "thinking": message.thinking or None,
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
    """`messages`: the visible path, in order; `branches`: every message of every branch (each names its
    parent, so the tree can be rebuilt)."""
    data = {
        "id": conversation.pk,
        "title": conversation.title,
        "model": conversation.model or None,
        "system_prompt": conversation.system_prompt or None,
        "created_at": conversation.created_at.isoformat(),
        "messages": [_message_dict(m) for m in transcript(conversation=conversation)],
        "branches": [_message_dict(m) for m in all_branches(conversation=conversation)],
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def export_markdown(conversation: Conversation, *, branches: bool = False) -> str:
    """The visible path; with `branches`, every message of every branch, each saying what it answers."""
    parts = [f"# {conversation.title or 'Conversation'}\n"]
    if conversation.system_prompt:
        parts.append(f"> System prompt: {conversation.system_prompt}\n")
    messages = all_branches(conversation=conversation) if branches else transcript(conversation=conversation)
    for message in messages:
        who = "You" if message.role == Message.Role.USER else f"Assistant ({message.model})"
        if branches:
            after = f"after #{message.parent_id}" if message.parent_id else "first"
            who = f"#{message.pk} {who} ({after})"
        parts.append(f"## {who}\n")
        for attachment in message.attachments.all():
            parts.append(f"- Attached: {attachment.original_name} ({attachment.description})")
        if message.thinking:
            quoted = "\n".join(f"> {line}" for line in message.thinking.splitlines())
            parts.append(f"> **Thinking**\n>\n{quoted}\n")
        parts.append(f"{message.content}\n")
        if message.is_cut_off:
            parts.append(f"_Response was cut off: {message.error_message}_\n")
    return "\n".join(parts)
