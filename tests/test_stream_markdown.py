"""Markdown while it streams: finished blocks arrive rendered by the server, the open block as text."""

from __future__ import annotations

import html
import threading
from typing import Any

import pytest

from chat.models import Message
from tests.support.asgi_client import AsgiClient, SSEEvent
from tests.support.fake_anthropic import End, FakeAnthropic, Text, ToolUse, Wait
from tests.support.streams import start_conversation, streamed_text

pytestmark = [pytest.mark.django_db(transaction=True)]

HEAD = "# Title\n\nSome **bold** text.\n\n"
CODE = "```python\ndef f():\n    return 1\n```\n"
TAIL = "The open *tail"


async def _until(stream: Any, check: Any, timeout: float = 15.0) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    while not check(events):
        events.append(await stream.next_event(timeout=timeout))
    return events


def _blocks(events: list[SSEEvent]) -> list[str]:
    return [e.data for e in events if e.event == "block"]


async def test_finished_blocks_arrive_rendered_before_the_reply_ends(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    go = threading.Event()
    pieces = [Text(HEAD[:12]), Text(HEAD[12:] + CODE[:10]), Text(CODE[10:] + TAIL)]
    upstream.enqueue(*pieces, Wait(go, 15), End())
    _, reply, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    early = await _until(stream, lambda events: len(_blocks(events)) >= 3)
    assert not go.is_set()  # the upstream still holds the end of the reply
    heading, paragraph, code = _blocks(early)[:3]
    assert "<h1>Title</h1>" in heading
    assert "<strong>bold</strong>" in paragraph
    assert '<span class="k">def</span>' in code and "<pre>" in code  # highlighted by Pygments
    # Offsets still count characters of the text: ids never go back, and a block follows its text.
    ids = [int(e.id) for e in early if e.id is not None]
    assert ids == sorted(ids)
    assert f'data-end="{len(HEAD + CODE)}"' in code
    go.set()
    rest = await stream.events_until("done")
    # Every character still travels once as text, so resume offsets and the saved text agree.
    assert streamed_text(early + rest) == HEAD + CODE + TAIL
    saved = await Message.objects.aget(pk=reply.pk)
    assert saved.content == HEAD + CODE + TAIL
    final = rest[-1].data
    assert "<h1>Title</h1>" in final and "<em>tail</em>" not in final  # the tail renders only at the end
    for rendered in (heading, paragraph, code):  # the streamed blocks are the final rendering's own HTML
        inner = rendered.split(">", 1)[1].rsplit("</div>", 1)[0]
        assert inner.strip() in final


async def test_a_late_page_and_stream_get_the_finished_prefix_rendered(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    go = threading.Event()
    upstream.enqueue(Text(HEAD + CODE + TAIL), Wait(go, 15), Text(" ends*."), End())
    conversation, reply, path = await start_conversation(alice_client)
    first = await alice_client.open_stream(path)
    await _until(first, lambda events: any(e.event == "delta" and "tail" in e.data for e in events))

    async def saved() -> bool:
        return (await Message.objects.aget(pk=reply.pk)).content == HEAD + CODE + TAIL

    from tests.support.streams import eventually

    await eventually(saved)
    page = (await alice_client.request("GET", f"/c/{conversation.pk}/")).text
    assert "<h1>Title</h1>" in page and '<span class="k">def</span>' in page
    tail_start = len(HEAD + CODE)
    assert f'data-start="{tail_start}"' in page
    assert f"done={tail_start}" in page
    # A second tab that has only the text (done=0) gets every finished block, and no text twice.
    late = await alice_client.open_stream(f"{path.split('?')[0]}?offset={len(HEAD + CODE + TAIL)}&done=0")
    events = await _until(late, lambda events: len(_blocks(events)) >= 3)
    assert not [e for e in events if e.event == "delta"]
    go.set()
    rest = await late.events_until("done")
    assert streamed_text(rest) == " ends*."
    await first.events_until("done")


async def test_model_markup_never_becomes_markup_in_blocks_or_tail(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    hostile = "<script>alert(1)</script> [x](javascript:alert(1))\n\n<img src=x onerror=alert(1)>"
    go = threading.Event()
    upstream.enqueue(Wait(go, 15), Text(hostile), End())
    _, _, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    go.set()
    events = await stream.events_until("done")
    for event in events:
        assert "<script" not in event.data and "<img" not in event.data and "href" not in event.data
    block = _blocks(events)[0]
    assert "&lt;script&gt;" in block
    assert html.unescape(streamed_text(events)) == hostile


async def test_with_streaming_markdown_off_no_block_is_rendered(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_STREAM_MARKDOWN = False
    go = threading.Event()
    upstream.enqueue(Wait(go, 15), Text(HEAD + CODE + TAIL), End())
    _, _, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    go.set()
    events = await stream.events_until("done")
    assert not _blocks(events)
    assert streamed_text(events) == HEAD + CODE + TAIL


async def test_a_tool_call_finishes_the_open_block_before_its_box(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    go = threading.Event()
    call = ToolUse("toolu_1", "calculator", ['{"expression": "6*7"}'])
    upstream.enqueue(Wait(go, 15), Text("Let me **compute** that"), call, End(stop_reason="tool_use"))
    upstream.enqueue(Text("It is *42*."), End())
    _, reply, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    go.set()
    events = await stream.events_until("done")
    kinds = [e.event for e in events if e.event in ("block", "tool")]
    first_tool = kinds.index("tool")
    assert "block" in kinds[:first_tool]  # the round's text was rendered before its tool box
    round_block = next(e.data for e in events if e.event == "block")
    assert "<strong>compute</strong>" in round_block
    assert f'data-end="{len("Let me **compute** that")}"' in round_block
    saved = await Message.objects.aget(pk=reply.pk)
    assert streamed_text(events) == saved.content
