"""Names and message shapes on the channel layer, shared by the producer and its subscribers.

Each reply has two groups:
- its audience (`reply.<id>`): the producer publishes `chunk` (text from a character offset), `tool`
  (a tool call's progress, as HTML) and `end`;
- its control (`reply-control.<id>`): subscribers ask for `sync` (the text from an offset, answered to
  their own channel) and any process asks for `stop`.
Delivery is at-most-once, so subscribers detect gaps by offset and ask for a sync; the database
(written before `end` is published) is the final word."""

from __future__ import annotations

from typing import Any

from channels.layers import BaseChannelLayer, get_channel_layer

CHUNK = "reply.chunk"
END = "reply.end"
SYNC = "reply.sync"
STOP = "reply.stop"
TOOL = "reply.tool"  # a tool call's progress, as an HTML fragment


def audience_group(reply_id: int) -> str:
    return f"reply.{reply_id}"


def control_group(reply_id: int) -> str:
    return f"reply-control.{reply_id}"


def layer() -> BaseChannelLayer:
    channel_layer = get_channel_layer()
    if channel_layer is None:  # pragma: no cover - settings always define one
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    return channel_layer


def chunk(start: int, text: str, tools: list[tuple[int, str]] | None = None) -> dict[str, Any]:
    """Text from offset `start`; a sync answer also carries the tool boxes at or after `start`."""
    message: dict[str, Any] = {"type": CHUNK, "start": start, "text": text}
    if tools:
        message["tools"] = [list(box) for box in tools]
    return message


def tool(offset: int, html: str) -> dict[str, Any]:
    return {"type": TOOL, "offset": offset, "html": html}


async def request_stop(reply_id: int) -> None:
    await layer().group_send(control_group(reply_id), {"type": STOP})


async def publish_end(reply_id: int) -> None:
    await layer().group_send(audience_group(reply_id), {"type": END})
