"""Helpers shared by the ASGI streaming tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from chat.models import Conversation, Message
from tests.support.asgi_client import AsgiClient, SSEEvent, Stream, stream_path


async def start_conversation(client: AsgiClient, text: str = "Hi there") -> tuple[Conversation, Message, str]:
    """POST the first message; return the conversation, its reply row and the reply's stream path."""
    response = await client.request("POST", "/c/start/", data={"text": text})
    assert response.status == 200, response.text
    path = stream_path(response.text)
    # From this response, not "the newest row": another client may be starting a conversation meanwhile.
    match = re.match(r"/c/(\d+)/m/(\d+)/stream/", path)
    assert match, path
    reply = await Message.objects.select_related("conversation").aget(
        pk=int(match[2]), conversation_id=int(match[1]), role="assistant"
    )
    return reply.conversation, reply, path


async def follow(client: AsgiClient, path: str, timeout: float = 20.0) -> tuple[Stream, list[SSEEvent]]:
    stream = await client.open_stream(path)
    assert stream.status == 200
    events = await stream.events_until("done", timeout=timeout)
    await stream.drain()
    return stream, events


def streamed_text(events: list[SSEEvent]) -> str:
    """What the page shows before the final swap: the deltas joined, unescaped like the browser does."""
    import html

    return "".join(html.unescape(e.data) for e in events if e.event == "delta")


async def eventually(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def reload(message: Message) -> Message:
    return await Message.objects.aget(pk=message.pk)
