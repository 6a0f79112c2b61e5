"""The tools chatsite ships: calculator, current date and time, search over the user's own conversations."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Q

from chat.models import Message
from chat.tools.registry import Tool, ToolContext, ToolError, register
from chat.tools.sandbox import run_isolated


async def _calculator(context: ToolContext, arguments: dict[str, Any]) -> str:
    # Computation never runs on the event loop: a child process, killed at the tool's timeout.
    return await run_isolated(
        "chat.tools.calculator:calculate", arguments, cpu_seconds=settings.CHAT_TOOL_TIMEOUT
    )


async def _current_time(context: ToolContext, arguments: dict[str, Any]) -> str:
    name = str(arguments.get("timezone") or "UTC")
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolError(f"Unknown time zone {name!r}; use an IANA name such as 'Europe/Paris'.") from exc
    now = datetime.now(zone)
    return json.dumps(
        {
            "timezone": name,
            "iso": now.isoformat(timespec="seconds"),
            "readable": now.strftime("%A %d %B %Y, %H:%M:%S %Z"),
        }
    )


SNIPPET = 160


@database_sync_to_async
def _search(user_id: int, query: str, limit: int) -> list[dict[str, Any]]:
    # Scoped by the caller's user id from the server side, never from the model's arguments.
    rows = (
        Message.objects.filter(conversation__user_id=user_id)
        .filter(Q(content__icontains=query) | Q(conversation__title__icontains=query))
        .select_related("conversation")
        .order_by("-created_at")[:limit]
    )
    results = []
    for message in rows:
        text = " ".join(message.content.split())
        at = text.lower().find(query.lower())
        start = max(0, at - SNIPPET // 3) if at >= 0 else 0
        results.append(
            {
                "conversation": message.conversation.title,
                "role": message.role,
                "date": message.created_at.date().isoformat(),
                "snippet": ("…" if start else "")
                + text[start : start + SNIPPET]
                + ("…" if len(text) > start + SNIPPET else ""),
            }
        )
    return results


async def _search_conversations(context: ToolContext, arguments: dict[str, Any]) -> str:
    query = " ".join(str(arguments.get("query", "")).split())
    if not query:
        raise ToolError("Give a word or phrase to search for.")
    results = await _search(context.user_id, query[:200], 5)
    return (
        json.dumps({"query": query, "results": results}, ensure_ascii=False)
        if results
        else (f"No earlier messages mention {query!r}.")
    )


register(
    Tool(
        name="calculator",
        label="calculator",
        description="Evaluate an arithmetic expression exactly: + - * / // % ** and parentheses, plus sqrt, "
        "abs, "
        "round, floor, ceil, log, log10, exp, sin, cos, tan, pi and e. Use it instead of mental arithmetic.",
        input_schema={
            "type": "object",
            "properties": {
                "expression": {"type": "string", "description": "For example: (17.5 * 3) / 4 + sqrt(2)"}
            },
            "required": ["expression"],
        },
        run=_calculator,
    )
)
register(
    Tool(
        name="current_time",
        label="the clock",
        description="The current date and time, in a given IANA time zone (default UTC).",
        input_schema={
            "type": "object",
            "properties": {
                "timezone": {"type": "string", "description": "An IANA time zone such as 'America/New_York'."}
            },
        },
        run=_current_time,
    )
)
register(
    Tool(
        name="search_conversations",
        label="conversation search",
        description="Search this user's own earlier conversations; returns up to five short snippets with "
        "their "
        "conversation title and date.",
        input_schema={"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        run=_search_conversations,
    )
)
