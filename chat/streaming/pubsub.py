"""Names and message shapes on the channel layer, shared by the producer and its subscribers.

Each reply has two groups:
- its audience (`reply.<id>`): the producer publishes `chunk` (text from a character offset, with the
  Markdown blocks it finished, rendered), `thinking` (extended thinking from an offset in the thinking
  text), `tool` (a tool call's progress, as HTML) and `end`;
- its control (`reply-control.<id>`): subscribers ask for `sync` (the text from an offset, answered to
  their own channel) and any process asks for `stop`.
Open streams also listen on their user's group (`streams-user.<id>`) and their session's group
(`streams-session.<hash>`), where `close` ends them on purpose: logout, deactivation, deletion.
Delivery is at-most-once, so subscribers detect gaps by offset and ask for a sync; the database
(written before `end` is published) is the final word.

The channel layer may fail (Redis restarts, a connection breaks). Nothing here lets that end a reply or a
stream: `publish`, `send`, `join` and `leave` log and drop on failure, pausing sends with a bounded back-off
while the layer is down; `listen` keeps receiving through failures, re-joins its groups (a restarted Redis
has forgotten them) and then yields `RESUMED`, so its reader knows messages may have been lost and syncs;
`stop_listening` ends such a loop with a message rather than a cancel."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from redis.exceptions import RedisError  # redis-py's errors (a channels_redis layer, if configured)

from chat.streaming import layers, resp

logger = logging.getLogger(__name__)

CHUNK = "reply.chunk"
END = "reply.end"
SYNC = "reply.sync"
STOP = "reply.stop"
TOOL = "reply.tool"  # a tool call's progress, as an HTML fragment
THINKING = "reply.thinking"  # extended thinking text from an offset (its own offset space)
CLOSE = "streams.close"  # end open streams on purpose; carries a reason (see subscriber.ENDED_NOTICES)
RESUMED = layers.RESUMED  # never sent: `listen`, or the layer to a sink, gives it when receiving again
EXIT = "layer.exit"  # sent by a loop's owner to the loop's own channel: `listen` returns (`stop_listening`)


def audience_group(reply_id: int) -> str:
    return f"reply.{reply_id}"


def control_group(reply_id: int) -> str:
    return f"reply-control.{reply_id}"


def user_group(user_id: int) -> str:
    return f"streams-user.{user_id}"


def session_group(session_key: str) -> str:
    # A digest, not the key itself: group names are visible to whoever can read the channel layer.
    return "streams-session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


# This project's layers (chat.streaming.layers): they take sinks and deliver to this loop's receivers at once.
OwnLayer = layers.LocalChannelLayer | layers.RedisPubSubLayer


def layer() -> BaseChannelLayer:
    channel_layer = get_channel_layer()
    if channel_layer is None:  # pragma: no cover - settings always define one
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    return channel_layer


async def new_channel() -> str:
    """A channel for this process to receive on: a producer's control channel, a subscriber's inbox.

    All with channels' one default prefix. (channels_redis's layer, used until issue 15's fourteenth
    session, let one receive() per process block on Redis, on its own prefix's key: with two prefixes a
    process that both generated a reply and streamed one starved one side. The pub/sub layer has no such
    lock; one prefix costs nothing.)"""
    return await layer().new_channel()


def chunk(
    start: int,
    text: str,
    tools: list[tuple[int, str]] | None = None,
    blocks: list[tuple[int, int, str]] | None = None,
) -> dict[str, Any]:
    """Text from offset `start`; a sync answer also carries the tool boxes at or after `start`. `blocks`:
    finished Markdown blocks `(a, b, html)` (text range [a, b) rendered once by the producer) that this
    text completed, or, in a sync answer, every block the subscriber's page lacks."""
    message: dict[str, Any] = {"type": CHUNK, "start": start, "text": text}
    if tools:
        message["tools"] = [list(box) for box in tools]
    if blocks:
        message["blocks"] = [list(block) for block in blocks]
    return message


def thinking(start: int, text: str) -> dict[str, Any]:
    return {"type": THINKING, "start": start, "text": text}


def tool(offset: int, html: str) -> dict[str, Any]:
    return {"type": TOOL, "offset": offset, "html": html}


async def request_stop(reply_id: int) -> bool:
    """Ask the producer to stop, wherever it runs. False if the layer is down: the database flag (set by the
    caller) still reaches the producer within a save interval."""
    return await publish(control_group(reply_id), {"type": STOP})


def end(*, finished_at: str, length: int, thinking_length: int, html: str) -> dict[str, Any]:
    """`end` with the reply's final rendering (`html`) and the version it shows: its `finished_at`
    (ISO 8601) and the lengths of its text and thinking. A subscriber that has sent exactly that much
    shows it as is; one that has not reads the row, as after a bare `end`."""
    return {
        "type": END,
        "finished_at": finished_at,
        "length": length,
        "thinking_length": thinking_length,
        "html": html,
    }


async def publish_end(reply_id: int, message: dict[str, Any] | None = None, *, here: bool = False) -> bool:
    """The reply has ended: `message` (see `end`) or a bare `end`. `here`: the producer has been handing its
    messages to this loop's streams (`publish_here`): they get `end` the same way, first; it also goes
    through a layer that reaches other processes, for a stream there that joined but whose sync was never
    answered (it opened as the reply ended). A stream here that gets both ends at the first."""
    message = message or {"type": END}
    if here:
        publish_here(audience_group(reply_id), message)
        if isinstance(layer(), layers.LocalChannelLayer):  # nowhere else to reach
            return True
    return await publish(audience_group(reply_id), message)


# --- Ending open streams on purpose ----------------------------------------------------------------
# Each subscriber ends with an `ended` event telling the page why; the reply itself (if still being
# written) goes on and is saved. Async versions first, each with its sync twin for sync views and signals.
# With the layer down they do nothing (logged): the action that asked (logout, delete) must still succeed.


async def aend_user_streams(*, user_id: int, reason: str) -> None:
    await publish(user_group(user_id), {"type": CLOSE, "reason": reason})


def end_user_streams(*, user_id: int, reason: str) -> None:
    async_to_sync(aend_user_streams)(user_id=user_id, reason=reason)


async def aend_session_streams(*, session_key: str, reason: str) -> None:
    await publish(session_group(session_key), {"type": CLOSE, "reason": reason})


def end_session_streams(*, session_key: str, reason: str) -> None:
    async_to_sync(aend_session_streams)(session_key=session_key, reason=reason)


async def aend_reply_streams(*, reply_ids: Iterable[int], reason: str) -> None:
    for reply_id in reply_ids:
        await publish(audience_group(reply_id), {"type": CLOSE, "reason": reason})


def end_reply_streams(*, reply_ids: Iterable[int], reason: str) -> None:
    async_to_sync(aend_reply_streams)(reply_ids=list(reply_ids), reason=reason)


# --- Surviving channel-layer failures --------------------------------------------------------------


@dataclass
class Backoff:
    """Delays before retrying after consecutive failures: `first`, doubling, never more than `cap` seconds."""

    first: float = 0.1
    cap: float = 2.0
    failures: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2 ** min(self.failures, 32))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


@dataclass
class _Outage:
    """This process's view of one layer for sends: while it is down, sends are dropped at once until
    `retry_at`, so a producer never waits on a dead Redis for every delta."""

    backoff: Backoff = field(default_factory=lambda: Backoff(first=0.1, cap=5.0))
    down_since: float | None = None
    retry_at: float = 0.0


_outages: weakref.WeakKeyDictionary[BaseChannelLayer, _Outage] = weakref.WeakKeyDictionary()


def _outage_of(channel_layer: BaseChannelLayer) -> _Outage:
    # Not `setdefault(layer, _Outage())`: that builds an _Outage and its Backoff on every call, which is
    # twice per delta published (measured: 31,188 of each for 15,000 deltas).
    outage = _outages.get(channel_layer)
    if outage is None:
        outage = _outages[channel_layer] = _Outage()
    return outage


async def _quietly(what: str, operation: Callable[[], Awaitable[None]]) -> bool:
    """Run one layer operation; True if it went through. A failure is logged and dropped: delivery is
    at-most-once anyway, and every reader recovers what it missed (sync by offset; the database)."""
    channel_layer = layer()
    outage = _outage_of(channel_layer)
    now = time.monotonic()
    if outage.down_since is not None and now < outage.retry_at:
        return False
    try:
        await operation()
    except ChannelFull:  # one slow reader's full channel, not an outage: it resyncs by offset
        return False
    except Exception as exc:
        delay = outage.backoff.next()
        outage.retry_at = now + delay
        if outage.down_since is None:
            outage.down_since = now
            logger.warning(
                "channel layer: %s failed (%s: %s); dropping sends, retrying in %.1fs",
                what,
                type(exc).__name__,
                exc,
                delay,
            )
        else:
            logger.info(
                "channel layer still failing (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay
            )
        return False
    if outage.down_since is not None:
        _layer_is_back(channel_layer)
    return True


def _layer_is_back(channel_layer: BaseChannelLayer) -> None:
    outage = _outage_of(channel_layer)
    if outage.down_since is not None:
        logger.warning("channel layer: sends work again after %.1fs", time.monotonic() - outage.down_since)
        outage.down_since = None
        outage.backoff.reset()


async def publish(group: str, message: dict[str, Any], *, batch: bool = False) -> bool:
    """`group_send` that never raises (see `_quietly`). `batch`: it may wait a moment to share a write
    with others (this project's Redis layer, `publish_every`): for a reply's steady deltas, never for what
    someone is waiting for. Another layer sends at once either way."""
    return await _quietly(f"group_send to {group}", lambda: _group_send(group, message, batch=batch))


def _group_send(group: str, message: dict[str, Any], *, batch: bool) -> Awaitable[None]:
    channel_layer = layer()
    if batch and isinstance(channel_layer, OwnLayer):
        return channel_layer.group_send(group, message, batch=True)
    return channel_layer.group_send(group, message)


async def send(channel: str, message: dict[str, Any]) -> bool:
    """`send` that never raises (see `_quietly`)."""
    return await _quietly(f"send to {channel}", lambda: layer().send(channel, message))


# --- Receivers on this event loop, without a round trip ----------------------------------------------
# A producer whose every stream is read in its own process delivers to them here, as the in-process layer
# always does: in Redis mode that spares each delta a PUBLISH, Redis's push and a second process's wake-up.
# Another layer (channels_redis) has no such path: everything goes through it.


def delivers_here() -> bool:
    """Whether the layer can hand a message to this loop's receivers at once (this project's layers)."""
    return isinstance(layer(), OwnLayer)


def is_here(channel: str) -> bool:
    """Whether `channel` receives on this event loop (False with a layer that cannot tell)."""
    channel_layer = layer()
    if isinstance(channel_layer, OwnLayer):
        return channel_layer.is_here(channel)
    return False


def publish_here(group: str, message: dict[str, Any]) -> None:
    """`group_send` to this loop's members of `group` only (see `delivers_here`); never raises."""
    channel_layer = layer()
    assert isinstance(channel_layer, OwnLayer)
    try:
        channel_layer.group_send_here(group, message)
    except Exception:  # a receiver's bug: as on the layer's own path, it must not reach the sender
        logger.exception("channel layer: delivering to %s here failed", group)


def send_here(channel: str, message: dict[str, Any]) -> None:
    """`send` to a channel of this loop (see `is_here`); never raises."""
    channel_layer = layer()
    assert isinstance(channel_layer, OwnLayer)
    try:
        channel_layer.send_here(channel, message)
    except ChannelFull:  # a slow reader: it sees the gap and syncs by offset
        pass
    except Exception:
        logger.exception("channel layer: delivering to %s here failed", channel)


async def join(channel: str, groups: Sequence[str]) -> bool:
    """Add `channel` to each group. False if the layer failed; `listen(..., joined=False)` joins later.
    Each group is asked even after one fails: the pub/sub layer records a membership before it fails, and
    subscribes to it once Redis is back (an attached channel has no `listen` to join again)."""

    async def add() -> None:
        failure: Exception | None = None
        for group in groups:
            try:
                await layer().group_add(group, channel)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    return await _quietly(f"group_add of {channel}", add)


async def leave(channel: str, groups: Sequence[str]) -> None:
    for group in groups:
        # Each on its own: one failure must not keep the channel in the other groups (they expire anyway).
        discard = functools.partial(layer().group_discard, group, channel)
        await _quietly(f"group_discard of {channel}", discard)


def attach(channel: str, sink: layers.Sink) -> bool:
    """Have the layer hand each message for `channel` to `sink` as it arrives, when it can (this project's
    layers, chat.streaming.layers): no receive loop needed, and after a failure of the layer the sink gets
    RESUMED. False otherwise (another layer): read with `listen`."""
    channel_layer = layer()
    if isinstance(channel_layer, layers.LocalChannelLayer):
        channel_layer.attach(channel, sink)
        return True
    if not isinstance(channel_layer, layers.RedisPubSubLayer):
        return False

    def resuming(message: dict[str, Any]) -> None:
        if message.get("type") == RESUMED:  # as `listen` does: sends (the sync it prompts) need not wait
            _layer_is_back(channel_layer)  # out their own back-off
        sink(message)

    channel_layer.attach(channel, resuming)
    return True


def detach(channel: str) -> None:
    channel_layer = layer()
    if isinstance(channel_layer, OwnLayer):
        channel_layer.detach(channel)


async def listen(
    channel: str, groups: Sequence[str], *, joined: bool = True, backoff: Backoff | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Every message on `channel`, for as long as the caller iterates, whatever the layer does meanwhile.

    After a failed receive it waits (bounded back-off, logged), re-joins `groups` — a Redis that restarted
    has lost their membership — and yields `{"type": RESUMED}` before receiving again: messages may have
    been lost, so the caller syncs what it needs. `joined=False`: the caller's own `join` failed; join first.

    It returns when EXIT arrives on `channel`: end it with `stop_listening`, not by cancelling its task, and
    never wrap a receive in a timeout (with channels_redis's layer, used until issue 15's fourteenth
    session, a cancelled receive dropped the channel's buffered messages; a layer may still hold some)."""
    backoff = backoff or Backoff()
    channel_layer = layer()
    failing_since: float | None = None
    while True:
        if not joined:
            try:
                for group in groups:
                    await channel_layer.group_add(group, channel)
            except Exception as exc:
                failing_since = failing_since or time.monotonic()
                await _pause(channel, "re-joining its groups", exc, backoff)
                continue
            joined = True
            _layer_is_back(channel_layer)  # so sends (a sync's answer) need not wait out their own back-off
            if failing_since is not None:
                logger.warning(
                    "channel layer: %s receives again after %.1fs", channel, time.monotonic() - failing_since
                )
                failing_since = None
            yield {"type": RESUMED}
        try:
            message = await channel_layer.receive(channel)
        except Exception as exc:
            _raise_if_cancelled()
            failing_since = failing_since or time.monotonic()
            joined = False
            await _pause(channel, "receive", exc, backoff)
            continue
        _raise_if_cancelled()
        backoff.reset()
        if message.get("type") == EXIT:
            return
        yield message


def _raise_if_cancelled() -> None:
    """A cancel that channels_redis or redis-py absorbed (the task says it is cancelling, yet we are here)
    still ends the loop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_listening(task: asyncio.Task[Any], channel: str, *, grace: float = 2.0) -> None:
    """End `task`, which iterates `listen(channel, ...)`: by sending EXIT to the channel, so the receive
    returns normally; cancelling it only if that cannot be sent or is not done within `grace` seconds.

    Why not just cancel: with channels_redis's layer (used until issue 15's fourteenth session) cancelling
    a receive lost that channel's buffer and, as observed here under load (the two-tab flake), a cancel
    could be absorbed while the receive held the process's receive lock in BZPOPMIN, and a producer
    awaiting it never saved its reply. An orderly end stays the rule for any layer. Never waits more than
    twice `grace`."""
    if not task.done() and await send(channel, {"type": EXIT}):
        await asyncio.wait({task}, timeout=grace)
    if task.done():
        return
    task.cancel()
    await asyncio.wait({task}, timeout=grace)
    if not task.done():
        logger.warning("channel layer: the receive loop on %s did not end when cancelled; left", channel)


async def _pause(channel: str, what: str, exc: Exception, backoff: Backoff) -> None:
    delay = backoff.next()
    # The first failure is a warning, with its traceback unless Redis or the network is to blame (then it
    # would only repeat, once per open stream); while the layer stays down, one line per retry would flood.
    first = backoff.failures == 1
    unexpected = not isinstance(exc, RedisError | OSError | resp.ReplyError)
    logger.log(
        logging.WARNING if first else logging.DEBUG,
        "channel layer: %s on %s failed (%s: %s); retrying in %.1fs",
        what,
        channel,
        type(exc).__name__,
        exc,
        delay,
        exc_info=exc if first and unexpected else None,
    )
    await asyncio.sleep(delay)
