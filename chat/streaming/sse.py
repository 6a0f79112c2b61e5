"""Server-sent event framing. Everything sent is escaped HTML split into one `data:` line per line, so no
text — the user's or the model's — can end an event early, start a forged one, or inject markup."""

from __future__ import annotations

import html
import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

OPEN = b"retry: 1000\n: open\n\n"  # daphne sends headers only with the first body chunk: send one at once
# Sent after CHAT_KEEPALIVE_SECONDS of silence. A named event, not a comment: the page can see it, and
# reopens a stream that has been silent for two intervals (a connection stalled somewhere on the way).
HEARTBEAT = b"event: heartbeat\ndata: 1\n\n"


def stream_position(text_offset: int, thinking_offset: int = 0) -> str:
    """An event id: the client's position in the answer text, and (after a dot, once there is any) in the
    extended thinking text: "120" or "120.45". A reconnect sends it back as Last-Event-ID."""
    return f"{text_offset}.{thinking_offset}" if thinking_offset else str(text_offset)


def parse_position(value: str | None) -> tuple[int, int] | None:
    """The inverse of `stream_position`; None when absent or malformed."""
    if not value:
        return None
    text, _, thinking = value.partition(".")
    try:
        return max(0, int(text)), max(0, int(thinking or 0))
    except ValueError:
        return None


def event(name: str, data: str, *, event_id: int | str | None = None) -> bytes:
    """Frame `data` (already safe HTML) as one event. CR, LF and CRLF all end an SSE line, so split on each;
    the browser joins the data lines back with LF."""
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def text_event(name: str, text: str, *, event_id: int | str | None = None) -> bytes:
    """A delta of plain text. A lone CR becomes `&#13;`, so the page keeps exactly the characters sent."""
    escaped = html.escape(text, quote=False).replace("\r", "&#13;")
    return event(name, escaped, event_id=event_id)
