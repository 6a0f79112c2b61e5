"""Tools the model may call. The registry is imported on first use (PEP 562), so the tool sandbox's child
process, which imports `chat.tools.calculator`, starts without loading Django."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chat.tools.errors import ToolError

if TYPE_CHECKING:
    from chat.tools.registry import Tool, ToolContext, enabled_tools, get_tool

__all__ = ["Tool", "ToolContext", "ToolError", "enabled_tools", "get_tool"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from chat.tools import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'chat.tools' has no attribute {name!r}")
