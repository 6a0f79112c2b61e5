"""Prompt-caching breakpoints in recorded requests: find them, or take them out to compare the history."""

from __future__ import annotations

from typing import Any


def breakpoints(body: dict[str, Any]) -> list[tuple[str, int, int]]:
    """Where a request body carries `cache_control`: ("system", 0, block) or ("messages", turn, block)."""
    found: list[tuple[str, int, int]] = []
    system = body.get("system")
    if isinstance(system, list):
        found += [("system", 0, i) for i, block in enumerate(system) if "cache_control" in block]
    for turn, message in enumerate(body.get("messages", [])):
        if isinstance(message["content"], list):
            found += [
                ("messages", turn, i)
                for i, block in enumerate(message["content"])
                if "cache_control" in block
            ]
    return found


def without_breakpoints(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the history holds them: `cache_control` removed, and a plain-string turn that the
    provider turned into one text block (to carry the breakpoint) a string again."""
    plain = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            marked = any("cache_control" in block for block in content)
            content = [{k: v for k, v in block.items() if k != "cache_control"} for block in content]
            if (
                marked
                and len(content) == 1
                and content[0]["type"] == "text"
                and set(content[0]) == {"type", "text"}
            ):
                content = content[0]["text"]
        plain.append({**message, "content": content})
    return plain
