"""The SSE subscriber of a reply: what any number of tabs, on any server process, read.

It sends the text from the client's offset, then the live tail, with no gap and no duplicate: every
delta carries its end offset as the event id; a gap in the offsets (the channel layer may drop
messages) triggers a sync from the producer; the final text always comes from the database, which
the producer writes before it publishes `end`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import timezone

from chat import flusher, pubsub, services, sse
from chat.db import background_db
from chat.models import Message

TICK = 1.0  # seconds between liveness checks while nothing arrives
SYNC_PATIENCE = 3.0  # seconds to wait for the producer's sync answer before consulting the database
DB_CHECK_EVERY = 5.0  # seconds between database checks on a quiet stream


@dataclass(frozen=True)
class Snapshot:
    content: str
    status: str
    lease_expired: bool


@background_db
def _snapshot(reply_id: int) -> Snapshot | None:
    row = Message.objects.filter(pk=reply_id).values("content", "status", "lease_expires_at").first()
    if row is None:
        return None
    lease = row["lease_expires_at"]
    return Snapshot(row["content"], row["status"], lease is None or lease < timezone.now())


@background_db
def _final_html(reply_id: int) -> str | None:
    message = Message.objects.select_related("conversation").filter(pk=reply_id).first()
    if message is None:
        return None
    return render_to_string("chat/conversation.html#message", {"message": message})


_reap = background_db(services.replies_reap_expired)


async def reply_events(reply_id: int, offset: int) -> AsyncIterator[bytes]:
    """The event stream for one subscriber, starting after character `offset`."""
    yield sse.OPEN
    subscription = _Subscription(reply_id, offset)
    async for frame in subscription.run():
        yield frame


class _Subscription:
    def __init__(self, reply_id: int, offset: int) -> None:
        self.reply_id = reply_id
        self.sent = max(0, offset)
        self.layer = pubsub.layer()
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sync_asked_at: float | None = None
        self.checked_at = time.monotonic()

    async def run(self) -> AsyncIterator[bytes]:
        channel = await self.layer.new_channel("reply-sub.")
        # Subscribe before reading the snapshot, so nothing published in between is missed.
        await self.layer.group_add(pubsub.audience_group(self.reply_id), channel)
        reader = asyncio.create_task(self._read(channel))
        try:
            snapshot = await _snapshot(self.reply_id)
            if snapshot is None:
                return
            if snapshot.status != Message.Status.STREAMING:
                async for frame in self._finish(snapshot.content):
                    yield frame
                return
            await self._ask_sync(channel)
            async for frame in self._follow(channel):
                yield frame
        finally:
            reader.cancel()
            await self.layer.group_discard(pubsub.audience_group(self.reply_id), channel)

    async def _read(self, channel: str) -> None:
        # A dedicated reader task: cancelling a channels_redis receive() loses its buffer, so the
        # follow loop waits on this queue, never on receive() itself.
        while True:
            self.inbox.put_nowait(await self.layer.receive(channel))

    async def _ask_sync(self, channel: str) -> None:
        self.sync_asked_at = time.monotonic()
        await self.layer.group_send(
            pubsub.control_group(self.reply_id),
            {"type": pubsub.SYNC, "reply_to": channel, "offset": self.sent},
        )

    async def _follow(self, channel: str) -> AsyncIterator[bytes]:
        keepalive = settings.CHAT_KEEPALIVE_SECONDS
        last_frame = time.monotonic()
        while True:
            try:
                messages = await self._next_messages()
            except TimeoutError:
                now = time.monotonic()
                if now - last_frame >= keepalive:
                    last_frame = now
                    yield sse.KEEPALIVE
                if await self._producer_gone(now, channel):
                    messages = [{"type": pubsub.END}]
                else:
                    continue
            frames: list[bytes] = []
            ended = False
            for message in messages:
                if message["type"] == pubsub.END:
                    ended = True
                    break
                if message["type"] == pubsub.TOOL:
                    start, text, tools = int(message["offset"]), "", [(message["offset"], message["html"])]
                elif message["type"] == pubsub.CHUNK:
                    start, text, tools = int(message["start"]), str(message["text"]), message.get("tools", [])
                else:
                    continue
                if start > self.sent:  # a gap: something was dropped; ask the producer for it
                    if self.sync_asked_at is None:
                        await self._ask_sync(channel)
                    continue
                self.sync_asked_at = None  # a message that fits: we are contiguous again
                frames.extend(self._frames(start, text, tools))
            if frames:
                last_frame = time.monotonic()
                yield b"".join(frames)  # what was already queued goes out in one write
            if ended:
                snapshot = await _snapshot(self.reply_id)
                if snapshot is not None:
                    async for frame in self._finish(snapshot.content):
                        yield frame
                return

    async def _next_messages(self) -> list[dict[str, Any]]:
        """Everything queued now, waiting up to TICK for the first one (TimeoutError if none comes)."""
        if self.inbox.empty():
            async with asyncio.timeout(TICK):
                batch = [await self.inbox.get()]
        else:
            batch = [self.inbox.get_nowait()]
        while not self.inbox.empty():
            batch.append(self.inbox.get_nowait())
        return batch

    def _frames(self, start: int, text: str, tools: list[tuple[int, str]]) -> Iterator[bytes]:
        """The part of `text` (from offset `start`) the client lacks, with tool boxes at their offsets.
        A box is sent whole each time; the page replaces one it already has."""
        end = start + len(text)
        for at, html in sorted(tools):
            if self.sent < at <= end:
                yield sse.text_event("delta", text[self.sent - start : at - start], event_id=at)
                self.sent = at
            yield sse.event("tool", html, event_id=self.sent)
        if end > self.sent:
            fresh, self.sent = text[self.sent - start :], end
            yield sse.text_event("delta", fresh, event_id=self.sent)

    async def _producer_gone(self, now: float, channel: str) -> bool:
        """While waiting: has the reply ended without us hearing `end`, or has its process died?"""
        sync_overdue = self.sync_asked_at is not None and now - self.sync_asked_at >= SYNC_PATIENCE
        # Check the database now and then anyway: `end` itself may have been dropped.
        if not sync_overdue and now - self.checked_at < DB_CHECK_EVERY:
            return False
        self.checked_at = now
        snapshot = await _snapshot(self.reply_id)
        if snapshot is None or snapshot.status != Message.Status.STREAMING:
            return True
        if snapshot.lease_expired and not flusher.is_local(self.reply_id):
            await _reap(exclude=flusher.local_ids())
            return True
        if sync_overdue:
            await self._ask_sync(channel)  # the producer lives (its lease is fresh): ask again
        return False

    async def _finish(self, content: str) -> AsyncIterator[bytes]:
        if len(content) > self.sent:
            fresh, self.sent = content[self.sent :], len(content)
            yield sse.text_event("delta", fresh, event_id=self.sent)
        final = await _final_html(self.reply_id)
        if final is not None:
            yield sse.event("done", final, event_id=len(content))
