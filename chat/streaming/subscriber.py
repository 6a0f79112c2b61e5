"""The SSE subscriber of a reply: what any number of tabs, on any server process, read.

It sends the text from the client's offset, then the live tail, with no gap and no duplicate: every
delta carries its end offset as the event id; a gap in the offsets (the channel layer may drop
messages) triggers a sync from the producer; the final text is what the producer saved before it
published `end`: `end` carries that version's rendering and lengths, and a subscriber that has sent exactly
that much shows it as is; any other reads the row (as after a bare `end`, e.g. from the reaper)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.exceptions import ChannelFull
from django.conf import settings
from django.utils import timezone
from django.utils.html import format_html

from chat.models import Message
from chat.streaming import flusher, metrics, pubsub, sse
from chat.streaming.caps import final_renders
from chat.streaming.db import background_db
from chat.streaming.store import FinalRender, areplies_reap_expired, reply_final_html

TICK = 1.0  # seconds between liveness checks while nothing arrives
SYNC_PATIENCE = 3.0  # seconds to wait for the producer's sync answer before consulting the database
DB_CHECK_EVERY = 5.0  # seconds between database checks on a quiet stream
OPENING_ENDS = (pubsub.THINKING, pubsub.END, pubsub.CLOSE)  # what ends the hold of live text at the start

# Why a stream was ended on purpose (pubsub.CLOSE), as the page says it. The reply itself is not stopped.
ENDED_NOTICES = {
    "logged_out": "You signed out, so this page stopped following the reply. Sign in again to see it.",
    "deactivated": "This account was deactivated, so the reply stopped streaming here.",
    "deleted": "This conversation was deleted.",
}


class Inbox:
    """One subscriber's pending messages, in arrival order; its follow loop takes all of them at each
    wake-up, so what queued while the client was being written to goes out as one write.

    Bounded: past `capacity` messages a put raises ChannelFull and the message is dropped, as a full channel
    does; the subscriber sees the gap in the offsets and syncs. So a stalled client costs at most that much.

    A wait sets no timer of its own: one tick, armed when a wait begins and none is pending, ends whatever
    wait is in progress `tick` seconds later (TimeoutError if nothing came). So a wait lasts at most `tick`,
    and a busy stream costs one timer a second instead of one per delta."""

    __slots__ = ("_capacity", "_items", "_tick", "_ticker", "_waiter")

    def __init__(self, *, capacity: int, tick: float) -> None:
        self._items: list[dict[str, Any]] = []
        self._capacity = capacity
        self._tick = tick
        self._ticker: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put(self, message: dict[str, Any]) -> None:
        if len(self._items) >= self._capacity:
            raise ChannelFull
        self._items.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self) -> list[dict[str, Any]]:
        """Everything pending, waiting for the first message if there is none (TimeoutError at the tick)."""
        if not self._items:
            loop = asyncio.get_running_loop()
            if self._ticker is None:
                self._ticker = loop.call_later(self._tick, self._ring)
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if not self._items:
                raise TimeoutError
        items, self._items = self._items, []
        return items

    def _ring(self) -> None:
        self._ticker = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None


@dataclass(frozen=True)
class Snapshot:
    content: str
    status: str
    lease_expired: bool
    thinking: str = ""
    finished_at: datetime | None = None


@background_db
def _read_snapshot(reply_id: int) -> Snapshot | None:
    row = (
        Message.objects.filter(pk=reply_id)
        .values("content", "status", "lease_expires_at", "thinking", "finished_at")
        .first()
    )
    if row is None:
        return None
    lease = row["lease_expires_at"]
    expired = lease is None or lease < timezone.now()
    return Snapshot(row["content"], row["status"], expired, row["thinking"], row["finished_at"])


async def _snapshot(reply_id: int) -> Snapshot | None:
    metrics.counts.snapshot_reads += 1
    return await _read_snapshot(reply_id)


_final_html = background_db(reply_final_html)


def _final_of(message: dict[str, Any]) -> FinalRender | None:
    """The final version an `end` message carries (see `pubsub.end`), or None for a bare `end` (or one
    that does not parse)."""
    try:
        finished_at = datetime.fromisoformat(str(message["finished_at"]))
        return FinalRender(
            finished_at, int(message["length"]), int(message["thinking_length"]), str(message["html"])
        )
    except (KeyError, TypeError, ValueError):
        return None


def ended_event(reason: str) -> bytes:
    """The terminal event of a stream ended on purpose: the page shows the notice and closes the source."""
    notice = ENDED_NOTICES.get(reason, "This page stopped following the reply.")
    html = format_html('<p class="stream-ended" role="alert" data-reason="{}">{}</p>', reason, notice)
    return sse.event("ended", html)


async def reply_events(
    reply_id: int,
    offset: int,
    *,
    user_id: int | None = None,
    session_key: str | None = None,
    thinking_offset: int = 0,
    done: int = 0,
) -> AsyncIterator[bytes]:
    """The event stream for one subscriber, starting after character `offset` of the answer and character
    `thinking_offset` of the extended thinking; `done`: the page already shows the rendered Markdown blocks
    up to that offset. It also ends, with an `ended` event, when its user's or session's streams are ended
    (logout, deactivation)."""
    metrics.counts.subscribers += 1
    try:
        yield sse.OPEN
        subscription = _Subscription(
            reply_id,
            offset,
            user_id=user_id,
            session_key=session_key,
            thinking_offset=thinking_offset,
            done=done,
        )
        async for frame in subscription.run():
            yield frame
    finally:
        metrics.counts.subscribers -= 1


class _Subscription:
    def __init__(
        self,
        reply_id: int,
        offset: int,
        *,
        user_id: int | None,
        session_key: str | None,
        thinking_offset: int = 0,
        done: int = 0,
    ) -> None:
        self.reply_id = reply_id
        self.groups = [pubsub.audience_group(reply_id)]
        if user_id is not None:
            self.groups.append(pubsub.user_group(user_id))
        if session_key:
            self.groups.append(pubsub.session_group(session_key))
        self.sent = max(0, offset)
        self.thinking_sent = max(0, thinking_offset)  # extended thinking: its own offset space
        self.block_end = max(0, min(done, self.sent))  # rendered blocks the page has end here
        # Woken at least once per heartbeat interval, so heartbeats go out on time when it is short.
        tick = min(TICK, settings.CHAT_KEEPALIVE_SECONDS)
        self.inbox = Inbox(capacity=pubsub.layer().get_capacity("subscriber"), tick=tick)
        self.sync_asked_at: float | None = None
        self.checked_at = time.monotonic()
        self.awaiting_first_token = True  # until this stream reports the reply's first delta (metrics)

    async def run(self) -> AsyncIterator[bytes]:
        channel = await pubsub.new_channel()
        # This project's layers (in-process, Redis pub/sub) hand messages straight to the inbox: no reader
        # task per stream. Another layer: a reader task receives them. Subscribe before reading the
        # snapshot, so nothing published in between is missed. If the layer is down, the stream is joined
        # once it is back (by the pub/sub layer, or the reader) and then gets RESUMED and asks for a sync.
        attached = pubsub.attach(channel, self.inbox.put)
        joined = await pubsub.join(channel, self.groups)
        reader = None if attached else asyncio.create_task(self._read(channel, joined))
        try:
            # Generated here, by a producer that still answers: its sync answer brings the text so far, and
            # its `end` will reach this stream (joined above), so the row need not be read (one trip to the
            # background database thread fewer per stream, on the start's path). Else the row says whether
            # the reply is still streaming at all.
            if not flusher.answers_syncs(self.reply_id):
                snapshot = await _snapshot(self.reply_id)
                if snapshot is None:
                    return
                if snapshot.status != Message.Status.STREAMING:
                    async for frame in self._finish(snapshot):
                        yield frame
                    return
            await self._ask_sync(channel)
            async for frame in self._follow(channel):
                yield frame
        finally:
            if reader is None:
                pubsub.detach(channel)
            else:
                await pubsub.stop_listening(reader, channel)
            self.inbox.close()
            await pubsub.leave(channel, self.groups)

    async def _read(self, channel: str, joined: bool) -> None:
        # A dedicated reader task (Redis): the follow loop waits on the inbox (with its ticks), never on
        # receive() itself, which is never cancelled half-way (see pubsub.listen). `listen` outlives quiet
        # spells and channel-layer failures; after one it yields RESUMED, and the follow loop syncs.
        async for message in pubsub.listen(channel, self.groups, joined=joined):
            try:
                self.inbox.put(message)
            except ChannelFull:  # dropped: the follow loop sees the gap and syncs
                pass

    async def _ask_sync(self, channel: str) -> None:
        # If this is lost (layer down, producer busy), `_producer_gone` asks again after SYNC_PATIENCE.
        self.sync_asked_at = time.monotonic()
        await pubsub.publish(
            pubsub.control_group(self.reply_id),
            {
                "type": pubsub.SYNC,
                "reply_to": channel,
                "offset": self.sent,
                "thinking_offset": self.thinking_sent,
                "done": self.block_end,
            },
        )

    async def _follow(self, channel: str) -> AsyncIterator[bytes]:
        keepalive = settings.CHAT_KEEPALIVE_SECONDS
        last_frame = time.monotonic()
        # Until the first sync answer arrives (it always begins with the thinking, possibly empty), live text
        # is held: a reply that thought before this stream subscribed would otherwise show its live answer
        # text before the thinking it missed (the page's order: thinking, then answer).
        opening: float | None = last_frame
        held: list[dict[str, Any]] = []
        while True:
            try:
                messages = await self.inbox.take()
            except TimeoutError:
                now = time.monotonic()
                if now - last_frame >= keepalive:
                    last_frame = now
                    yield sse.HEARTBEAT
                if await self._producer_gone(now, channel):
                    messages = [{"type": pubsub.END}]
                elif not held:
                    continue
                else:
                    messages = []
            messages, held = held + messages, []
            if opening is not None:
                if (
                    any(m["type"] in OPENING_ENDS for m in messages)
                    or time.monotonic() - opening >= SYNC_PATIENCE
                ):
                    opening = None
                    # Thinking first, whatever the order things arrived in: live answer text held while
                    # waiting comes before the sync answer that ends the hold, and that answer's thinking
                    # must still go out first. Two offset spaces, so reordering loses and repeats nothing.
                    messages.sort(key=lambda m: m["type"] != pubsub.THINKING)
                else:
                    held = messages
                    continue
            frames: list[bytes] = []
            ended: dict[str, Any] | None = None
            for message in messages:
                if message["type"] == pubsub.CLOSE:
                    yield b"".join(frames) + ended_event(str(message.get("reason", "")))
                    return
                if message["type"] == pubsub.END:
                    ended = message
                    break
                if message["type"] == pubsub.THINKING:
                    at, thought = int(message["start"]), str(message["text"])
                    if at > self.thinking_sent:  # a gap in the thinking: ask the producer for it
                        if self.sync_asked_at is None:
                            await self._ask_sync(channel)
                        continue
                    frames.extend(self._thinking_frames(at, thought))
                    continue
                if message["type"] == pubsub.RESUMED:  # the layer was down: anything may have been lost
                    await self._ask_sync(channel)
                    continue
                blocks: list[Any] = []
                if message["type"] == pubsub.TOOL:
                    start, text, tools = int(message["offset"]), "", [(message["offset"], message["html"])]
                elif message["type"] == pubsub.CHUNK:
                    start, text, tools = int(message["start"]), str(message["text"]), message.get("tools", [])
                    blocks = message.get("blocks", [])
                else:
                    continue
                if start > self.sent:  # a gap: something was dropped; ask the producer for it
                    if self.sync_asked_at is None:
                        await self._ask_sync(channel)
                    continue
                self.sync_asked_at = None  # a message that fits: we are contiguous again
                frames.extend(self._frames(start, text, tools, blocks))
            if frames:
                last_frame = time.monotonic()
                yield b"".join(frames)  # what was already queued goes out in one write
            if ended is not None:
                final = _final_of(ended)
                if (
                    final is not None
                    and final.html is not None
                    and (final.length, final.thinking_length) == (self.sent, self.thinking_sent)
                ):
                    # Followed to the end: the text sent is the text saved, and `end` brings its rendering.
                    yield sse.event("done", final.html, event_id=self._position())
                    return
                snapshot = await _snapshot(self.reply_id)
                if snapshot is not None:
                    async for frame in self._finish(snapshot, final):
                        yield frame
                return

    def _frames(
        self, start: int, text: str, tools: list[tuple[int, str]], blocks: list[Any] | None = None
    ) -> Iterator[bytes]:
        """The part of `text` (from offset `start`) the client lacks, with tool boxes and finished Markdown
        blocks at their offsets. A box is sent whole each time; the page replaces one it already has. A
        block (HTML for text [a, b), sent once per subscriber) follows the delta that reaches b; the page
        drops that much of its open text. Event ids stay character offsets of the text sent."""
        end = start + len(text)
        markers = [(int(b), 0, html) for _, b, html in blocks or () if int(b) > self.block_end]
        markers += [(int(at), 1, html) for at, html in tools]
        for at, kind, html in sorted(markers):
            if self.sent < at <= end:
                fresh, self.sent = text[self.sent - start : at - start], at
                self._count_text(len(fresh))
                yield sse.text_event("delta", fresh, event_id=self._position())
            if kind == 0:
                self.block_end = at
                yield sse.event("block", html, event_id=self._position())
            else:
                yield sse.event("tool", html, event_id=self._position())
        if end > self.sent:
            fresh, self.sent = text[self.sent - start :], end
            self._count_text(len(fresh))
            yield sse.text_event("delta", fresh, event_id=self._position())

    def _thinking_frames(self, start: int, text: str) -> Iterator[bytes]:
        """The part of the thinking text (from its offset `start`) the client lacks."""
        end = start + len(text)
        if end > self.thinking_sent:
            fresh, self.thinking_sent = text[self.thinking_sent - start :], end
            counts = metrics.counts
            counts.thinking_events += 1
            counts.thinking_chars += len(fresh)
            if self.awaiting_first_token:
                self.awaiting_first_token = metrics.first_delta_sent(self.reply_id)
            yield sse.text_event("thinking", fresh, event_id=self._position())

    def _count_text(self, chars: int) -> None:
        """A `delta` event of `chars` characters goes out (metrics; no lock, no allocation)."""
        counts = metrics.counts
        counts.text_events += 1
        counts.text_chars += chars
        if self.awaiting_first_token:
            self.awaiting_first_token = metrics.first_delta_sent(self.reply_id)

    def _position(self) -> str:
        return sse.stream_position(self.sent, self.thinking_sent)

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
            await areplies_reap_expired(exclude=flusher.local_ids())
            return True
        if sync_overdue:
            await self._ask_sync(channel)  # the producer lives (its lease is fresh): ask again
        return False

    async def _finish(self, snapshot: Snapshot, final: FinalRender | None = None) -> AsyncIterator[bytes]:
        """The rest from the database (thinking, then text), then the final rendering: `final`'s (from
        `end`) if it shows the version the row has, else rendered once for every subscriber asking."""
        content = snapshot.content
        for frame in self._thinking_frames(0, snapshot.thinking):
            yield frame
        if len(content) > self.sent:
            fresh, self.sent = content[self.sent :], len(content)
            self._count_text(len(fresh))
            yield sse.text_event("delta", fresh, event_id=self._position())
        version = (snapshot.finished_at, len(content), len(snapshot.thinking))
        if (
            final is not None
            and final.html is not None
            and (final.finished_at, final.length, final.thinking_length) == version
        ):
            html: str | None = final.html
        else:
            # Every subscriber asks at `end`: render the finished reply once for all of them.
            key = (self.reply_id, snapshot.finished_at, len(content))
            html = await final_renders.get(key, lambda: _final_html(self.reply_id))
        if html is not None:
            yield sse.event("done", html, event_id=self._position())
