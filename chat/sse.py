"""Server-sent event framing. Everything sent is escaped HTML split into one `data:` line per line, so no
text — the user's or the model's — can end an event early, start a forged one, or inject markup."""

from __future__ import annotations

import html
import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

OPEN = b"retry: 1000\n: open\n\n"  # daphne sends headers only with the first body chunk: send one at once
KEEPALIVE = b": keepalive\n\n"


def event(name: str, data: str, *, event_id: int | None = None) -> bytes:
    """Frame `data` (already safe HTML) as one event. CR, LF and CRLF all end an SSE line, so split on each;
    the browser joins the data lines back with LF."""
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def text_event(name: str, text: str, *, event_id: int | None = None) -> bytes:
    """A delta of plain text. A lone CR becomes `&#13;`, so the page keeps exactly the characters sent."""
    escaped = html.escape(text, quote=False).replace("\r", "&#13;")
    return event(name, escaped, event_id=event_id)
