from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from chat.rendering import render_markdown, tool_call_html
from chat.tools import get_tool

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    # render_markdown escapes raw HTML and sanitises the result with nh3, so marking it safe is sound.
    return mark_safe(render_markdown(text))


@register.filter
def tool_box(part: dict[str, Any]) -> SafeString:
    tool = get_tool(part["name"])
    return mark_safe(
        tool_call_html(
            tool_id=part["id"],
            label=tool.label if tool else part["name"],
            arguments=part["input"],
            result=part["result"],
            is_error=part["is_error"],
        )
    )
