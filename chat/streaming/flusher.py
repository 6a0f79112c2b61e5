"""One flusher per process saves every local reply that changed and renews every local lease, in one
database call each CHAT_SAVE_INTERVAL — instead of a save loop, and a database round trip, per reply.
It also delivers Stop requests found in the database (the fallback when a pub/sub message is lost)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from chat.streaming import metrics
from chat.streaming.store import areplies_save_batch
from chat.streaming.tasks import spawn

logger = logging.getLogger(__name__)


@dataclass
class Registration:
    """What the flusher needs from a producer: its text so far and how to tell it to stop."""

    text: Callable[[], str]
    ttft_ms: Callable[[], int | None]
    stop: Callable[[str], None]  # "stopped" (a user asked) or "gone" (deleted or reaped elsewhere)
    saved_length: int = 0
    renewed_at: float = field(default_factory=time.monotonic)
    # Extended thinking so far (its own text, saved alongside the answer's).
    thinking: Callable[[], str] = lambda: ""
    saved_thinking_length: int = 0
    # Until the producer stops listening to its control group: it answers a sync, and its `end` is still
    # to come (see `answers_syncs`).
    answering: bool = True


_replies: dict[int, Registration] = {}
_task: asyncio.Task[None] | None = None


def register(reply_id: int, registration: Registration) -> None:
    global _task
    _replies[reply_id] = registration
    if _task is None or _task.done():
        _task = spawn(_flush_forever(), name="flusher")


def unregister(reply_id: int) -> None:
    _replies.pop(reply_id, None)


def is_local(reply_id: int) -> bool:
    """True while this process is generating the reply: its lease is ours to renew, not to reap."""
    return reply_id in _replies


def answers_syncs(reply_id: int) -> bool:
    """True while this process is generating the reply and its producer still answers a subscriber's sync
    and has yet to publish `end`. A subscriber that joined the reply's groups before asking this needs no
    read of the row: the sync answer brings the text so far, and `end` will reach it."""
    registration = _replies.get(reply_id)
    return registration is not None and registration.answering


def stop_answering(reply_id: int) -> None:
    """The producer stops listening for syncs (its reply is ending): from now on, `answers_syncs` is False."""
    registration = _replies.get(reply_id)
    if registration is not None:
        registration.answering = False


def local_ids() -> list[int]:
    return list(_replies)


async def flush_once() -> None:
    now = time.monotonic()
    heartbeat_every = max(settings.CHAT_SAVE_INTERVAL, settings.CHAT_LEASE_SECONDS / 3)
    saves: list[tuple[int, str, int | None]] = []
    renew: list[int] = []
    thinking: dict[int, str] = {}
    for reply_id, reg in list(_replies.items()):
        text = reg.text()
        thought = reg.thinking()
        if len(thought) != reg.saved_thinking_length:
            thinking[reply_id] = thought
        if len(text) != reg.saved_length or reply_id in thinking:
            saves.append((reply_id, text, reg.ttft_ms()))
        elif now - reg.renewed_at >= heartbeat_every:
            renew.append(reply_id)
    if not saves and not renew:
        return
    began = time.perf_counter()
    result = await areplies_save_batch(saves=saves, renew=renew, thinking=thinking)
    metrics.FLUSH.observe(time.perf_counter() - began)  # queueing on the database thread included
    for reply_id, text, _ in saves:
        if reply_id in _replies:
            _replies[reply_id].saved_length = len(text)
            if reply_id in thinking:
                _replies[reply_id].saved_thinking_length = len(thinking[reply_id])
    for reply_id in [r for r, _, _ in saves] + renew:
        if reply_id in _replies:
            _replies[reply_id].renewed_at = now
    for reply_id in result.gone:
        if reply_id in _replies:
            _replies[reply_id].stop("gone")
    for reply_id in result.stop_requested:
        if reply_id in _replies:
            _replies[reply_id].stop("stopped")


async def _flush_forever() -> None:
    while _replies:
        await asyncio.sleep(settings.CHAT_SAVE_INTERVAL)
        try:
            await flush_once()
        except Exception:  # the database may be briefly away; the next round tries again
            logger.exception("flushing replies failed")
