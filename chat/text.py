"""Text that can be stored and sent: no database takes a lone surrogate (U+D800-U+DFFF, which cannot be
encoded as UTF-8), and PostgreSQL's text and jsonb cannot hold U+0000. Model output may carry either
(JSON allows `\\u0000` and `\\ud800`), a user's message may carry a NUL.

Invariant: `clean_model_text` replaces each such code point with exactly one U+FFFD, so lengths and
character offsets are unchanged - what a stream has shown lines up with what is saved."""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def has_unstorable(text: str) -> bool:
    return _UNSTORABLE.search(text) is not None


def clean_model_text(text: str) -> str:
    """`text` with every NUL and lone surrogate replaced by U+FFFD (same length)."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def clean_model_data(value: Any) -> Any:
    """The same for every string (keys included) in JSON-like data, e.g. a tool call's arguments."""
    if isinstance(value, str):
        return clean_model_text(value)
    if isinstance(value, dict):
        return {clean_model_data(key): clean_model_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_model_data(item) for item in value]
    return value
