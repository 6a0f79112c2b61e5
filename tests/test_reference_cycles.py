"""Issue 15's memory finding, as behaviour: a whole exchange (the start POST and the reply's event stream,
each ended as daphne ends a request) leaves no reference cycles behind, so what it allocated is freed by
reference counting when it ends, not at the next full collection.

Measured before (a `gc.callbacks` timer and `gc.DEBUG_SAVEALL` in the bench's server, N=50 and N=100):
every POST and every finished stream was cyclic garbage: the handler's frame held in a traceback, the
request's own cycles, each render's context, the new conversation and its reply pointing at each other.
Full collections found 45,000-50,000 such objects per bench run and stopped every stream for 11-100 ms
each time."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from chat.models import Message
from tests.support.asgi_client import AsgiClient, stream_path
from tests.support.fake_anthropic import End, FakeAnthropic, Text
from tests.support.streams import eventually

# What a request, its response, its render and its rows are made of: none may be left in a cycle.
REQUEST_OBJECTS = {
    "ASGIRequest",
    "HttpResponse",
    "StreamingHttpResponse",
    "RequestContext",
    "SessionStore",
    "Conversation",
    "Message",
    "QuerySet",
    "Task",
}


@pytest.fixture
def garbage() -> Iterator[list[Any]]:
    """While the test runs, no automatic collection, and what a collection finds is kept for a look
    (`gc.DEBUG_SAVEALL`); call `collect()` on the list's behalf at the end of the test."""
    gc.collect()
    gc.garbage.clear()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def _names(garbage: list[Any]) -> set[str]:
    return {type(thing).__name__ for thing in garbage}


def _our_frames(garbage: list[Any]) -> list[str]:
    return [
        f"{thing.f_code.co_filename}:{thing.f_code.co_name}"
        for thing in garbage
        if isinstance(thing, FrameType) and "/chat/" in thing.f_code.co_filename
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_started_and_streamed_reply_leaves_no_reference_cycles(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, garbage: list[Any]
) -> None:
    upstream.enqueue(Text("Hello "), Text("**there**."), End())
    started = await alice_client.request_as_daphne("POST", "/c/start/", data={"text": "Hi"})
    assert started.status == 200, started.text
    streamed = await alice_client.request_as_daphne("GET", stream_path(started.text))
    assert streamed.status == 200 and b"event: done" in streamed.body
    reply_id = int(stream_path(started.text).split("/")[4])

    async def finished() -> bool:
        return await Message.objects.filter(pk=reply_id, status="complete").aexists()

    await eventually(finished)
    for task in [t for t in background.running_tasks() if t.get_name() != "reaper"]:
        await task  # the producer is done with the reply's objects

    gc.collect()
    assert _names(garbage) & REQUEST_OBJECTS == set(), sorted(_names(garbage) & REQUEST_OBJECTS)
    assert _our_frames(garbage) == []


@pytest.mark.django_db(transaction=True)
async def test_the_collection_would_find_the_handlers_cycle_were_it_made(
    garbage: list[Any],
) -> None:
    """The check above can fail: the cycle the handler used to make (a task's exception re-raised in the
    frame that holds the task) is found by the same collection."""

    async def hang_up() -> None:
        raise ConnectionResetError

    async def handler() -> None:
        task = asyncio.create_task(hang_up())
        await asyncio.wait([task])
        try:
            task.result()
        except ConnectionResetError:
            pass

    await handler()
    gc.collect()
    assert "Task" in _names(garbage)
