from chat.tools.registry import Tool, ToolContext, ToolError, enabled_tools, get_tool

__all__ = ["Tool", "ToolContext", "ToolError", "enabled_tools", "get_tool"]
