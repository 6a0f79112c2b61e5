import functools
from typing import Any

from django import template
from django.conf import settings
from django.urls import get_script_prefix, reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from chat.rendering import StreamingView, render_markdown, streaming_view, tool_box_html
from chat.selectors import Branches, message_branches

register = template.Library()


_PK = 9_876_543_210  # the placeholder pk of the one reversed URL


@functools.cache
def _conversation_url(script_prefix: str) -> tuple[str, str]:
    # Split at the last occurrence: the pk comes after the script prefix, whatever digits that holds.
    head, _, tail = reverse("chat:conversation", args=[_PK]).rpartition(str(_PK))
    return head, tail


@register.filter
def conversation_url(pk: int) -> str:
    """`{% url 'chat:conversation' pk %}` for the sidebar's up to 50 links: reversed once (per script
    prefix), not once per link (a `reverse` each was a fifth of the render for a user with 50 or more
    conversations)."""
    head, tail = _conversation_url(get_script_prefix())
    return f"{head}{int(pk)}{tail}"


@register.filter
def markdown(text: str) -> SafeString:
    # render_markdown escapes raw HTML and sanitises the result with nh3, so marking it safe is sound.
    return mark_safe(render_markdown(text))


@register.filter
def tool_box(part: dict[str, Any]) -> SafeString:
    return mark_safe(tool_box_html(part))  # built with format_html: every value escaped


@register.simple_tag
def streaming(message: Any) -> StreamingView:
    """A streaming reply's finished blocks (HTML, sanitised like the final rendering) and open text."""
    view = streaming_view(message.parts(), markdown=settings.CHAT_STREAM_MARKDOWN)
    return StreamingView(mark_safe(view.done_html), view.tail, view.tail_start)


@register.filter
def exact_text(text: str) -> SafeString:
    """Escaped text whose CRs survive HTML parsing (as the stream sends them), so offsets stay exact."""
    return mark_safe(escape(text).replace("\r", "&#13;"))


@register.simple_tag
def branches(message: Any) -> Branches:
    """The message's place among its alternatives (precomputed on the page, one query in a fragment)."""
    return message_branches(message=message)
