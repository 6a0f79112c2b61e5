"""Run one tool call with a timeout; every failure becomes an `is_error` result the model can read."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from chat.tools.registry import ToolContext, ToolError, get_tool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolResult:
    tool_use_id: str
    content: str
    is_error: bool

    def api_block(self) -> dict[str, Any]:
        return {
            "type": "tool_result",
            "tool_use_id": self.tool_use_id,
            "content": self.content,
            "is_error": self.is_error,
        }


async def run_tool_call(
    *, tool_use_id: str, name: str, arguments: dict[str, Any], context: ToolContext, timeout: float
) -> ToolResult:
    tool = get_tool(name)
    if tool is None:
        return ToolResult(tool_use_id, f"There is no tool named {name!r}.", True)
    try:
        async with asyncio.timeout(timeout):
            content = await tool.run(context, arguments)
    except TimeoutError:
        return ToolResult(tool_use_id, f"The {name} tool did not finish within {timeout:g} seconds.", True)
    except ToolError as exc:
        return ToolResult(tool_use_id, str(exc), True)
    except Exception:
        logger.exception("tool %s failed", name)
        return ToolResult(tool_use_id, f"The {name} tool failed unexpectedly.", True)
    return ToolResult(tool_use_id, content, False)
