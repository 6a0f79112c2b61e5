"""The channel layers: in-memory (one process, the zero-set-up default) and Redis, without their
per-message costs.

channels' InMemoryChannelLayer sweeps every channel and group for expired messages on each send, receive
and group_send, starts a task per group member, and deep-copies every message: its cost per message grows
with the number of open streams (measured: 75 µs per delta with 1 reply, 5.5 ms with 1,000). Here the
sweep runs at most once a second, group_send delivers inline, and messages are copied shallowly — ours are
flat dicts of strings, numbers and lists that receivers never mutate.

A channel may also have a sink (`attach`): a callable that takes each message the moment it is sent, in
place of the channel's queue. An event stream's subscriber attaches its inbox, so a delta reaches it without
a reader task, a queue put and get, and a task wake-up per delta per open stream (the relay has none of
these). Sinks get the sender's dict itself, not a copy: they must not mutate it.

`RedisPubSubLayer` carries the same messages between processes by Redis pub/sub (see its docstring), and
takes sinks too: a message that Redis pushes to this process goes to each receiving stream's inbox on the
layer's one reader task. Both layers also deliver to this event loop's receivers alone, at once
(`send_here`, `group_send_here`, `is_here`): for a sender that knows every receiver it needs is here (a
producer whose streams all read in its process), which in Redis mode spares each message the round trip."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, InMemoryChannelLayer
from channels_redis.serializers import registry
from channels_redis.utils import decode_hosts

from chat.streaming import resp

logger = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]

# What a sink on `RedisPubSubLayer` gets when the layer receives again after its connection broke: anything
# sent meanwhile is lost. (chat.streaming.pubsub.RESUMED, the same for its `listen`; defined here so that
# the layers need nothing from the engine.)
RESUMED = "layer.resumed"


class LocalChannelLayer(InMemoryChannelLayer):
    sweep_every = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._swept_at = 0.0
        self._sinks: dict[str, Sink] = {}

    def attach(self, channel: str, sink: Sink) -> None:
        """Deliver every message sent to `channel` (directly or through a group) by calling `sink` at
        once, on the sender's task. A sink that cannot take more raises ChannelFull, like a full queue."""
        self.require_valid_channel_name(channel)
        self._sinks[channel] = sink

    def detach(self, channel: str) -> None:
        self._sinks.pop(channel, None)

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at >= self.sweep_every:
            self._swept_at = now
            super()._clean_expired()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.send_here(channel, message)

    async def group_send(self, group: str, message: dict[str, Any], *, batch: bool = False) -> None:
        # `batch`: as on `RedisPubSubLayer`; here every message is delivered at once.
        assert isinstance(message, dict), "message is not a dict"
        self.group_send_here(group, message)

    # Every channel of this layer is here: the twins of send and group_send that `RedisPubSubLayer` has
    # for its own loop's receivers (see there) are these two themselves.

    def is_here(self, channel: str) -> bool:
        return True

    def send_here(self, channel: str, message: dict[str, Any]) -> None:
        sink = self._sinks.get(channel)
        if sink is not None:
            sink(message)
            return
        queue = self.channels.get(channel)
        if queue is None:
            self.require_valid_channel_name(channel)
            queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            queue.put_nowait((time.time() + self.expiry, dict(message)))
        except asyncio.QueueFull as exc:
            raise ChannelFull(channel) from exc

    def group_send_here(self, group: str, message: dict[str, Any]) -> None:
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                self.send_here(channel, message)
            except ChannelFull:  # as channels does: a full subscriber misses it and resyncs by offset
                pass


class _Lost:
    """Put in a channel's queue when the subscription that fed it broke: its receive() raises."""


_LOST = _Lost()


@dataclass
class _LoopSubscriptions:
    """One event loop's side of a `RedisPubSubLayer`: its command connection, the pub/sub connection that a
    reader task keeps subscribed, and the channels and group memberships of the receivers on this loop."""

    name_prefix: str  # this loop's channels are "<prefix><name_prefix>!<random>"
    commands: resp.Connection | None = None  # PUBLISHes, with the configured socket timeout
    connecting: asyncio.Task[resp.Connection] | None = None  # the command connection being made
    queues: dict[str, asyncio.Queue[Any]] = field(default_factory=dict)
    sinks: dict[str, Sink] = field(default_factory=dict)  # attached channels: in place of their queues
    groups: dict[str, set[str]] = field(default_factory=dict)
    pubsub: resp.Connection | None = None  # set while subscribed
    subscribed: set[str] = field(default_factory=set)  # group keys subscribed on `pubsub`
    down: bool = False  # the last attempt to connect failed (until one succeeds)
    attempt: asyncio.Future[None] | None = None  # resolved when the current attempt to connect concludes
    reader: asyncio.Task[None] | None = None


class RedisPubSubLayer(BaseChannelLayer):
    """A channel layer on Redis pub/sub: one PUBLISH per message sent to a channel or a group, one message
    pushed to each process (event loop) that has a receiver for it, handed to that receiver's queue.

    Why: channels_redis stores every message in a sorted set per receiving channel, so a delta published
    to a reply's audience cost two round trips to send and four more for each receiving stream to fetch.
    Measured in issue 15's fourteenth session (one process, a private redis-server, a message sent to a
    group and received): 1.3-1.4 ms of CPU with channels_redis's layer, 0.25-0.3 ms here one at a time,
    0.08-0.13 ms with 50 streams sending at once (their PUBLISHes share pipelines). In the bench
    (`--processes 2 --redis --db postgres`), the CPU per delta of two processes on Redis went from 5.7x
    to 2.1-2.3x one in-memory process's at N=10, and at N=50 from 3.5x (not held: delta p50 4.3 s) to
    1.9x (held). Pub/sub delivers at most once and keeps nothing for a receiver that is not
    subscribed at that moment: that is all this engine asks of a layer (chat.streaming.pubsub: readers
    detect gaps by offset and sync; the database has the final word).

    The wire: `chat.streaming.resp`, hiredis on an asyncio protocol, not redis-py's client (see that
    module for the measured reason). A pushed message is parsed and handed to its receivers inside the
    protocol's `data_received`, with no task, coroutine or stream read per message; the PUBLISHes made in
    one turn of the loop go out in one write, on a connection that asks for no answers (CLIENT REPLY OFF,
    after one answered PUBLISH that would show an ACL refusal) and probes Redis's liveness once a second.

    `publish_every` (seconds; settings: REDIS_PUBLISH_EVERY_MS, default 5 ms): that connection writes the
    group sends made with `batch=True` (a reply's deltas after its first) at most that often
    (`resp.Connection.go_quiet(write_every=)`). A PUBLISH after a quiet spell goes at the end of its turn of
    the loop; under load, those of several turns share one write, so Redis wakes once for them, reads them
    together and pushes the messages for each receiving process in one write, which wakes that process
    once. A send without `batch` (what someone waits for: a reply's first delta, a sync request and its
    answer, a stop, an end) goes at the end of its turn, taking the held ones with it. Nothing is
    reordered; a batched delta that crosses processes may arrive up to that much later. Measured (issue
    15, session 19, AMD EPYC, `./bench/run --levels 10,50 --targets ours --processes 2 --redis --db
    postgres --deltas 300 --ttft 0.7`, 0 then 5 ms, two pairs, every message batched): the redis-server's
    CPU per delta 38-39 -> 23-24 µs at N=50 and 60-63 -> 43-53 at N=10; the two processes' at N=50 449
    and 475 -> 445 and 483 (no change), at N=10 607 and 657 -> 567 and 617; every delta crosses processes
    there, and its added latency went from p50 0.9-1.1 / p99 5.9-8.3 ms to 4.8-4.9 / 12.0-12.4. At 2 ms
    (one run): the redis-server 35 µs, no change through the noise.

    Failure contract, as `pubsub.listen` expects it: when the pub/sub connection breaks, every receive() on
    this loop raises (a `_LOST` marker in each queue), a reader task reconnects with a bounded back-off
    and subscribes to this loop's groups again, and group_add() raises until it has: `listen` then re-joins
    and yields RESUMED, and its caller syncs. Sends and group sends raise while Redis is known to be down
    (the engine's `publish`/`send` drop them): from the moment the command connection breaks, or its
    liveness probe goes unanswered for the socket timeout. A send made before that is lost silently, as
    a message in flight always was.

    One Redis (the first of `hosts`): no sharding, no Sentinel. `expiry` and `group_expiry` do not apply
    (nothing is stored); `capacity` bounds each channel's queue here, and a message for a full queue is
    dropped.

    Sinks (`attach`), as on the in-process layer: the reader hands each message for an attached channel to
    its sink, with no queue, receive loop or task per channel. Group memberships are this layer's own
    (Redis only has this loop's subscriptions), so they outlive a broken connection: after reconnecting and
    subscribing again, the reader hands each sink `{"type": RESUMED}` and its owner syncs. A membership
    recorded while Redis was down (group_add raised) is subscribed once it is back."""

    extensions = ["groups", "flush"]
    QUIET = 5.0  # seconds without a message before the reader pings Redis

    def __init__(
        self,
        hosts: list[Any] | None = None,
        prefix: str = "asgi",
        expiry: int = 60,
        capacity: int = 100,
        channel_capacity: dict[str, int] | None = None,
        symmetric_encryption_keys: list[str] | None = None,
        serializer_format: str = "msgpack",
        publish_every: float = 0.0,
        **_ignored: Any,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        # channels_redis's host format (an address, or host and port) and its serializers (msgpack;
        # encrypted with `symmetric_encryption_keys`). Commands (PUBLISH) get the configured socket timeout
        # (default 15 s): a dead Redis must not hang a producer. The pub/sub connection waits for messages
        # as long as the channels are quiet; a dead one is noticed by the reader's own PING when it has
        # heard nothing for QUIET seconds, and no answer within that same timeout (TCP keepalive too).
        self._address = resp.Address.from_host(dict(decode_hosts(hosts)[0]))
        self._serializer = registry.get_serializer(
            serializer_format, symmetric_encryption_keys=symmetric_encryption_keys
        )
        self.prefix = prefix
        self._publish_every = publish_every
        self._groups_at = len(self._group_key(""))
        self._specific_at = len(prefix) + 1
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSubscriptions] = (
            weakref.WeakKeyDictionary()
        )

    # --- this loop's state and its reader ------------------------------------------------------------

    def _state(self) -> _LoopSubscriptions:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopSubscriptions(uuid.uuid4().hex)
        return state

    def _reading(self) -> _LoopSubscriptions:
        """This loop's state, with its reader started (receivers need it)."""
        state = self._state()
        if state.reader is None or state.reader.done():
            loop = asyncio.get_running_loop()
            state.attempt = loop.create_future()
            state.reader = loop.create_task(self._read(state), name="redis-pubsub")
        return state

    async def _up(self, state: _LoopSubscriptions) -> bool:
        """Whether this loop is subscribed: at once if it is, or known to be down; else after the attempt
        to connect under way concludes (at most the connect timeout)."""
        if state.pubsub is not None:
            return True
        if not state.down and state.attempt is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(state.attempt), self._address.connect_timeout)
        return state.pubsub is not None

    @staticmethod
    def _concluded(state: _LoopSubscriptions, *, up: bool) -> None:
        state.down = not up
        if state.attempt is not None and not state.attempt.done():
            state.attempt.set_result(None)

    def _key(self, channel: str) -> str:
        return f"{self.prefix}:{channel}"

    def _group_key(self, group: str) -> str:
        return f"{self.prefix}:group:{group}"

    async def _read(self, state: _LoopSubscriptions) -> None:
        delay = 0.05
        pattern = self._key(f"*{state.name_prefix}!*")
        loop = asyncio.get_running_loop()
        lost_at: float | None = None
        while True:
            pubsub: resp.Connection | None = None
            try:
                confirmed: asyncio.Future[None] = loop.create_future()  # Redis confirmed the PSUBSCRIBE
                pubsub = await resp.connect(
                    self._address, on_push=functools.partial(self._pushed, state, confirmed)
                )
                pubsub.send("PSUBSCRIBE", pattern)
                keys = {self._group_key(group) for group in list(state.groups)}
                if keys:
                    pubsub.send("SUBSCRIBE", *keys)
                # Up once Redis has confirmed the pattern: a send to one of this loop's channels made after
                # that reaches it.
                either: list[asyncio.Future[Any]] = [confirmed, pubsub.closed]
                await asyncio.wait(
                    either,
                    timeout=self._address.answer_within,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not confirmed.done():
                    raise ConnectionError("Redis did not confirm the subscription")
                confirmed.result()  # raises if Redis refused it
                state.pubsub, state.subscribed = pubsub, keys
                self._concluded(state, up=True)
                delay = 0.05
                if lost_at is not None:
                    logger.warning(
                        "channel layer: the Redis pub/sub connection is back after %.1fs (%d groups)",
                        loop.time() - lost_at,
                        len(keys),
                    )
                    lost_at = None
                # Attached channels were not told of the failure (nothing of theirs raises); now they may
                # have missed messages. On a first connect too: a sink attached while Redis was down.
                for channel in list(state.sinks):
                    self._deliver(state, channel, {"type": RESUMED})
                await self._watch(pubsub)
            except asyncio.CancelledError:
                if pubsub is not None:
                    pubsub.close()
                raise
            except Exception as exc:
                if state.pubsub is not None:  # it was up: what its receivers wait for may be lost
                    lost_at = loop.time()
                    logger.warning(
                        "channel layer: the Redis pub/sub connection was lost (%s: %s); reconnecting",
                        type(exc).__name__,
                        exc,
                    )
                    for queue in state.queues.values():
                        _put_dropping_oldest(queue, _LOST)
                elif not state.down:  # the first failed attempt: say why (a wrong address or password)
                    logger.warning(
                        "channel layer: cannot subscribe on Redis at %s (%s: %s); retrying",
                        self._address.where(),
                        type(exc).__name__,
                        exc,
                    )
                state.pubsub, state.subscribed = None, set()
                self._concluded(state, up=False)
                if pubsub is not None:
                    pubsub.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                state.attempt = loop.create_future()

    async def _watch(self, pubsub: resp.Connection) -> None:
        """Return never; raise when the pub/sub connection fails. Messages are handled as they arrive
        (`_pushed`); this pings Redis after QUIET seconds without hearing anything, and fails the connection
        if nothing, not even the answer, comes within the socket timeout."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.wait({pubsub.closed}, timeout=self.QUIET)
            if not pubsub.closed.done() and loop.time() - pubsub.heard >= self.QUIET:
                pinged = loop.time()
                pubsub.send("PING")
                await asyncio.wait({pubsub.closed}, timeout=self._address.answer_within)
                if not pubsub.closed.done() and pubsub.heard < pinged:
                    raise ConnectionError("Redis did not answer a PING on the pub/sub connection")
            if pubsub.closed.done():
                raise ConnectionError(str(pubsub.closed.result() or "the Redis pub/sub connection closed"))

    def _pushed(self, state: _LoopSubscriptions, confirmed: asyncio.Future[None], reply: Any) -> None:
        """One reply pushed on the pub/sub connection (called from its protocol's `data_received`);
        `confirmed` resolves when Redis confirms the connection's pattern subscription, or refuses it."""
        if isinstance(reply, resp.ReplyError):  # a refused (P)SUBSCRIBE: an ACL on channels
            logger.warning("channel layer: Redis refused a subscription (%s)", reply)
            if not confirmed.done():
                confirmed.set_exception(ConnectionError(f"Redis refused the subscription: {reply}"))
            return
        try:
            kind = reply[0]
            if kind == b"message":
                body = self._serializer.deserialize(reply[2])
                for channel in list(state.groups.get(reply[1].decode()[self._groups_at :], ())):
                    self._deliver(state, channel, body)
            elif kind == b"pmessage":
                body = self._serializer.deserialize(reply[3])
                self._deliver(state, reply[2].decode()[self._specific_at :], body)
            elif kind == b"psubscribe":
                if not confirmed.done():
                    confirmed.set_result(None)
            # subscribe / unsubscribe confirmations and PING's "pong": nothing to do
        except Exception:  # a message that cannot be read must not break the connection every stream uses
            logger.exception("channel layer: a message pushed by Redis could not be read; dropped")

    async def _publish(self, key: str, data: bytes, *, batch: bool = False) -> None:
        """PUBLISH `data` to `key` on this loop's quiet command connection (`resp.Connection.post`): written,
        in this loop's order, with the other PUBLISHes of this turn of the loop; no answer is asked for.

        Raises if Redis cannot be reached, and once after the connection broke (what was in flight may be
        lost: the engine's `publish` then backs off) before the next call connects again. A PUBLISH made
        in the moment between a crash and this process noticing it is lost without an error, as one in
        flight always was: delivery is at most once, and readers sync by offset."""
        state = self._state()
        commands = state.commands
        if commands is None or commands.lost:
            if commands is not None:
                state.commands = None
                raise ConnectionError(f"the Redis connection broke ({commands.failure}); sends may be lost")
            commands = await self._connect_commands(state)
        commands.post("PUBLISH", key, data, now=not batch)

    async def _connect_commands(self, state: _LoopSubscriptions) -> resp.Connection:
        """The command connection, made once for all the PUBLISHes waiting for it (each raises if it fails;
        the engine's `publish` then backs off)."""
        if state.connecting is None or state.connecting.done():
            state.connecting = asyncio.get_running_loop().create_task(
                self._open_commands(), name="redis-connect"
            )
        commands = await asyncio.shield(state.connecting)
        state.commands = commands
        return commands

    async def _open_commands(self) -> resp.Connection:
        commands = await resp.connect(self._address)
        try:
            # One answered PUBLISH first (to a group nobody joins), so that a Redis that refuses this
            # layer's PUBLISHes (an ACL on channels) says so here, with its reason, before they go quiet.
            await commands.call("PUBLISH", self._group_key("layer.probe"), b"")
        except BaseException:
            commands.close()
            raise
        commands.go_quiet(write_every=self._publish_every)
        return commands

    def _deliver(self, state: _LoopSubscriptions, channel: str, message: dict[str, Any]) -> None:
        sink = state.sinks.get(channel)
        if sink is not None:
            try:
                sink(message)
            except ChannelFull:  # as a full queue: it misses this and syncs by offset
                pass
            except Exception:  # one receiver's bug must not break the connection every stream here uses
                logger.exception("channel layer: the receiver on %s failed; message dropped", channel)
            return
        queue = state.queues.get(channel)
        if queue is None:
            return  # a channel that left (or never joined) every group: nobody receives there any more
        with contextlib.suppress(asyncio.QueueFull):  # a full reader misses it and syncs by offset
            queue.put_nowait(message)

    # --- the channel layer API ------------------------------------------------------------------------

    def attach(self, channel: str, sink: Sink) -> None:
        """Hand every message for `channel` (a channel of this loop, from `new_channel`) to `sink` on this
        loop's reader task, in place of its queue; after a broken connection, once subscribed again, a
        `{"type": RESUMED}` (see the class docstring). The sinks of one group's members share the
        deserialized dict: they must not mutate it."""
        self.require_valid_channel_name(channel)
        state = self._reading()
        state.sinks[channel] = sink
        state.queues.pop(channel, None)

    def detach(self, channel: str) -> None:
        state = self._state()
        state.sinks.pop(channel, None)

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A channel of this loop. Messages reach it once the loop is subscribed: if it is connecting, this
        waits for that (at most the connect timeout), so that a send right after reaches it; with Redis
        known to be down it returns at once (the caller's join fails and is retried)."""
        state = self._reading()
        channel = f"{prefix}{state.name_prefix}!{uuid.uuid4().hex[:12]}"
        state.queues[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        await self._up(state)
        return channel

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        # Never batched: a send to one channel (a sync's answer, a loop's exit) is always awaited by someone.
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        # Through Redis even to a channel of this loop: one order for every message, and `/readyz`'s round
        # trip is a real one. (With Redis down the send fails; `pubsub.stop_listening` then cancels the
        # receive loop, which costs nothing here: no message is held anywhere but the channel's queue.)
        await self._publish(self._key(channel), self._serializer.serialize(message))

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        state = self._reading()
        queue = state.queues.get(channel)
        if queue is None:
            queue = state.queues[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        message = await queue.get()
        if message is _LOST:
            raise ConnectionError("the Redis pub/sub connection was lost; messages may have been missed")
        return cast(dict[str, Any], message)

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = self._reading()
        state.groups.setdefault(group, set()).add(channel)  # the reader subscribes to it when (re)connected
        if not await self._up(state):
            raise ConnectionError("the Redis pub/sub connection is not up; join again")
        key = self._group_key(group)
        pubsub = state.pubsub
        if pubsub is not None and key not in state.subscribed:
            state.subscribed.add(key)
            pubsub.send("SUBSCRIBE", key)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = self._state()
        members = state.groups.get(group)
        if members is not None:
            members.discard(channel)
            if not members:
                del state.groups[group]
                key = self._group_key(group)
                if state.pubsub is not None and key in state.subscribed:
                    state.subscribed.discard(key)
                    state.pubsub.send("UNSUBSCRIBE", key)
        if not any(channel in members for members in state.groups.values()):
            state.queues.pop(channel, None)  # in no group any more: nothing will be received there

    async def group_send(self, group: str, message: dict[str, Any], *, batch: bool = False) -> None:
        """`batch`: the PUBLISH may wait up to `publish_every` to share a write (see the class docstring)."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        await self._publish(self._group_key(group), self._serializer.serialize(message), batch=batch)

    # --- this loop's receivers, without Redis ----------------------------------------------------------
    # For a sender that knows every receiver it needs is on this loop (the producer of a reply whose
    # streams are all read in this process): the message reaches them at once, as on the in-process layer
    # (the sender's dict itself, not a copy), and never touches Redis. Not a substitute for group_send when
    # a receiver may be elsewhere: other processes get nothing.

    def is_here(self, channel: str) -> bool:
        """Whether `channel` (from `new_channel`) is one of this event loop's."""
        return channel.rpartition("!")[0].endswith(self._state().name_prefix)

    def send_here(self, channel: str, message: dict[str, Any]) -> None:
        """`send` to a channel of this loop (see `is_here`), delivered now."""
        self._deliver(self._state(), channel, message)

    def group_send_here(self, group: str, message: dict[str, Any]) -> None:
        """`group_send` to this loop's members of `group` only, delivered now."""
        state = self._state()
        for channel in list(state.groups.get(group, ())):
            self._deliver(state, channel, message)

    async def flush(self) -> None:
        """Stop this process's readers and close its connections (tests)."""
        loops, self._loops = dict(self._loops), weakref.WeakKeyDictionary()
        for loop, state in loops.items():
            if loop is not asyncio.get_running_loop():
                continue
            for task in (state.reader, state.connecting):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            for connection in (state.commands, state.pubsub):
                if connection is not None:
                    connection.close()


def _put_dropping_oldest(queue: asyncio.Queue[Any], item: Any) -> None:
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
