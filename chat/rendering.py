"""Markdown to safe HTML: markdown-it-py (raw HTML off), Pygments for fenced code, nh3 to sanitise."""

from __future__ import annotations

import functools
import html
import json
from typing import Any

import nh3
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True)


def _highlight(code: str, lang: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang.strip()) if lang.strip() else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return html.escape(code)
    return str(highlight(code, lexer, _FORMATTER))


@functools.cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt(
        "commonmark", {"html": False, "linkify": False, "typographer": False, "highlight": _highlight}
    )
    md.enable("table").enable("strikethrough")
    return md


_ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "em",
    "strong",
    "del",
    "s",
    "code",
    "pre",
    "span",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "img",
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "span": {"class"},
    "code": {"class"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
}


def render_markdown(text: str) -> str:
    """Safe HTML for a reply. Links open in a new tab without handing over the opener."""
    raw = _markdown().render(text)
    return nh3.clean(
        raw,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )


def tool_call_html(
    *,
    tool_id: str,
    label: str,
    arguments: dict[str, Any] | None,
    result: str | None,
    is_error: bool,
) -> str:
    """A tool call as the page shows it, live and when saved. Each update is the whole box; the page
    replaces the box with the same id, so repeats (after a reconnect) are harmless."""
    if result is None:
        status = f"Using {label}…"
    else:
        status = f"{label[:1].upper()}{label[1:]} failed" if is_error else f"Used {label}"
    parts = [format_html('<div class="tool-status">{}</div>', status)]
    if arguments is not None:
        parts.append(
            format_html('<pre class="tool-input">{}</pre>', json.dumps(arguments, ensure_ascii=False))
        )
    if result is not None:
        parts.append(format_html('<pre class="tool-result">{}</pre>', result))
    return format_html(
        '<div class="tool-call{}" id="tool-{}" role="note">{}</div>',
        " is-error" if is_error else (" is-running" if result is None else ""),
        tool_id,
        mark_safe("".join(parts)),  # each part was built by format_html
    )
