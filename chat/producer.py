"""The producer of a reply: calls the provider, publishes each delta, saves the text.

It runs as a task in the process that accepted the message, independent of any HTTP connection, so a
refresh or a closed tab does not stop it. Subscribers (see `subscriber.py`) follow it through the
channel layer from any process. The database is written on a throttle (every CHAT_SAVE_INTERVAL
seconds while text flows, with the lease renewal in the same UPDATE) and once at the end — never per
token, and never on the path from upstream to subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from chat import pubsub, services
from chat.errors import MAX_TOKENS_MESSAGE, REFUSAL_MESSAGE, STOPPED_MESSAGE, TRUNCATED_MESSAGE, ReplyFailure
from chat.models import Message
from chat.providers import Finished, ReplyRequest, Started, TextDelta, get_provider
from chat.selectors import provider_history

logger = logging.getLogger(__name__)


class StopRequested(Exception):
    """Raised into the generation when a user asks it to stop."""


@dataclass
class ReplyState:
    reply_id: int
    text: str
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    saved_length: int = -1
    started_event: Started | None = None
    stop_reason: str = ""  # why we are ending early: "stopped" / "gone"

    @property
    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started) * 1000)


@database_sync_to_async
def _load(reply_id: int) -> tuple[ReplyRequest, str] | None:
    reply = Message.objects.select_related("conversation").filter(pk=reply_id).first()
    if reply is None or reply.status != Message.Status.STREAMING:
        return None
    messages, system, model = provider_history(reply=reply)
    request = ReplyRequest(model=model, system=system, messages=messages, max_tokens=settings.CHAT_MAX_TOKENS)
    return request, reply.content


_save_progress = database_sync_to_async(services.reply_save_progress)
_finish = database_sync_to_async(services.reply_finish)


async def produce_reply(reply_id: int) -> None:
    """Generate reply `reply_id` (a STREAMING row) to the end, whatever happens to its viewers."""
    loaded = await _load(reply_id)
    if loaded is None:
        return
    request, initial_text = loaded
    state = ReplyState(reply_id=reply_id, text=initial_text, saved_length=len(initial_text))
    layer = pubsub.layer()
    control_channel = await layer.new_channel("reply-control.")
    await layer.group_add(pubsub.control_group(reply_id), control_channel)

    generation = asyncio.create_task(_generate(state, request))
    helpers = [
        asyncio.create_task(_control_loop(state, control_channel, generation)),
        asyncio.create_task(_save_loop(state, generation)),
    ]
    outcome: dict[str, Any] = {}
    try:
        outcome = await _outcome(state, generation)
    except asyncio.CancelledError:
        # The process is shutting down: keep the partial and say so; no one will finish this reply here.
        generation.cancel()
        outcome = {
            "status": Message.Status.INTERRUPTED,
            "error": ReplyFailure("interrupted", "The server restarted before this response finished."),
        }
        raise
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await asyncio.shield(_close(state, outcome, control_channel))


async def _generate(state: ReplyState, request: ReplyRequest) -> Finished | None:
    layer = pubsub.layer()
    group = pubsub.audience_group(state.reply_id)
    provider = get_provider()
    finished: Finished | None = None
    async with contextlib.aclosing(provider.stream(request)) as events:
        async for item in events:
            if isinstance(item, TextDelta):
                if state.first_token_at is None:
                    state.first_token_at = time.monotonic()
                start = len(state.text)
                state.text += item.text
                await layer.group_send(group, pubsub.chunk(start, item.text))
            elif isinstance(item, Started):
                state.started_event = item
            else:
                finished = item
    return finished


async def _outcome(state: ReplyState, generation: asyncio.Task[Finished | None]) -> dict[str, Any]:
    try:
        finished = await generation
    except asyncio.CancelledError:
        if asyncio.current_task() and asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise
        if state.stop_reason == "gone":
            return {"status": None}
        return {"status": Message.Status.STOPPED, "error": ReplyFailure("stopped", STOPPED_MESSAGE)}
    except ReplyFailure as failure:
        return {"status": Message.Status.ERROR, "error": failure}
    except Exception:
        logger.exception("reply %s failed", state.reply_id)
        return {
            "status": Message.Status.ERROR,
            "error": ReplyFailure(
                "internal", "Something went wrong on our side while writing this response."
            ),
        }
    if finished is None or finished.stop_reason is None:
        return {
            "status": Message.Status.INCOMPLETE,
            "error": ReplyFailure("truncated", TRUNCATED_MESSAGE),
            "finished": finished,
        }
    if finished.stop_reason == "max_tokens":
        return {
            "status": Message.Status.INCOMPLETE,
            "error": ReplyFailure("max_tokens", MAX_TOKENS_MESSAGE),
            "finished": finished,
        }
    if finished.stop_reason == "refusal":
        return {
            "status": Message.Status.INCOMPLETE,
            "error": ReplyFailure("refusal", REFUSAL_MESSAGE, False),
            "finished": finished,
        }
    return {"status": Message.Status.COMPLETE, "finished": finished}


async def _control_loop(state: ReplyState, channel: str, generation: asyncio.Task[Any]) -> None:
    """Answer subscribers' sync requests from memory, and stop on request from any process."""
    layer = pubsub.layer()
    while True:
        message = await layer.receive(channel)
        if message["type"] == pubsub.SYNC:
            offset = max(0, min(int(message["offset"]), len(state.text)))
            await layer.send(message["reply_to"], pubsub.chunk(offset, state.text[offset:]))
        elif message["type"] == pubsub.STOP and not generation.done():
            state.stop_reason = state.stop_reason or "stopped"
            generation.cancel()


async def _save_loop(state: ReplyState, generation: asyncio.Task[Any]) -> None:
    """Throttled persistence plus the lease heartbeat, off the delta path. Also the fallback Stop signal."""
    interval = settings.CHAT_SAVE_INTERVAL
    heartbeat_every = max(interval, settings.CHAT_LEASE_SECONDS / 3)
    last_write = time.monotonic()
    while not generation.done():
        await asyncio.sleep(interval)
        now = time.monotonic()
        if len(state.text) == state.saved_length and now - last_write < heartbeat_every:
            continue
        length = len(state.text)
        result = await _save_progress(reply_id=state.reply_id, content=state.text, ttft_ms=state.ttft_ms)
        state.saved_length, last_write = length, now
        if not result.exists:  # deleted, or reaped as interrupted: someone else owns its fate now
            state.stop_reason = "gone"
            generation.cancel()
        elif result.stop_requested and not generation.done():
            state.stop_reason = state.stop_reason or "stopped"
            generation.cancel()


async def _close(state: ReplyState, outcome: dict[str, Any], control_channel: str) -> None:
    layer = pubsub.layer()
    status = outcome.get("status")
    try:
        if status is not None:
            finished: Finished | None = outcome.get("finished")
            started = state.started_event
            # A reply that failed or was stopped still reports the input usage the upstream announced.
            await _finish(
                reply_id=state.reply_id,
                content=state.text,
                status=status,
                error=outcome.get("error"),
                stop_reason=finished.stop_reason if finished else None,
                model=finished.model if finished else (started.model if started else None),
                input_tokens=finished.input_tokens
                if finished
                else (started.input_tokens if started else None),
                output_tokens=finished.output_tokens if finished else None,
                ttft_ms=state.ttft_ms,
                duration_ms=round((time.monotonic() - state.started) * 1000),
            )
    finally:
        # Persist, then publish: a subscriber that sees `end` finds the final text in the database.
        await layer.group_discard(pubsub.control_group(state.reply_id), control_channel)
        await pubsub.publish_end(state.reply_id)
