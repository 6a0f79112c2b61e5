"""A small tool registry: a tool is a typed async function plus its name, description and JSON input schema.
Which tools the model may call is a setting (CHAT_TOOLS)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chat.tools.errors import ToolError

__all__ = ["Tool", "ToolContext", "ToolError", "ToolFunction", "enabled_tools", "get_tool", "register"]


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the caller. Tools act for this user only."""

    user_id: int
    conversation_id: int


ToolFunction = Callable[[ToolContext, dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    run: ToolFunction
    label: str  # shown on the page: "Using <label>…"

    def api_definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


_REGISTRY: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    _REGISTRY[tool.name] = tool
    return tool


def enabled_tools() -> list[Tool]:
    from chat.tools import builtin  # noqa: F401 - registers the shipped tools

    return [_REGISTRY[name] for name in settings.CHAT_TOOLS if name in _REGISTRY]


def get_tool(name: str) -> Tool | None:
    return {tool.name: tool for tool in enabled_tools()}.get(name)
