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

`RedisLayer` is channels_redis's layer with fewer Redis round trips per message (see its docstring)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer
from redis.exceptions import NoScriptError


class LocalChannelLayer(InMemoryChannelLayer):
    sweep_every = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._swept_at = 0.0
        self._sinks: dict[str, Callable[[dict[str, Any]], None]] = {}

    def attach(self, channel: str, sink: Callable[[dict[str, Any]], None]) -> None:
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

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                await self.send(channel, message)
            except ChannelFull:  # as channels does: a full subscriber misses it and resyncs by offset
                pass


# channels_redis's group-send script, plus the expiry of old messages it runs in a pipeline beforehand.
_GROUP_SEND = """
local over_capacity = 0
local now = tonumber(ARGV[#ARGV - 1])
local expiry = tonumber(ARGV[#ARGV])
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, math.floor(now) - expiry)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""
_GROUP_SEND_SHA = hashlib.sha1(_GROUP_SEND.encode()).hexdigest()


class RedisLayer(RedisChannelLayer):
    """channels_redis's layer, sending to a group in two round trips to Redis instead of four.

    Measured (bench, `--processes 2 --redis --db postgres`, N=10, py-spy): two processes on Redis spent 3.7x
    the CPU per delta of one in-memory process, most of it in redis-py sending commands. channels_redis
    sends a message to a group in four round trips (expire old members; list them; expire old messages, in
    a pipeline; the send script, its whole text each time). Here members are expired and listed in one
    pipeline, and the send, with the message expiry folded into the script, goes by EVALSHA (the script's
    text once per Redis start); nothing is sent to an empty group. Same keys, scores, capacity and expiry
    as channels_redis.

    Receiving is channels_redis's own (four round trips: restore a backup queue, BZPOPMIN, back the message
    up, drop the backup). A bare BZPOPMIN was tried and not kept: after a Redis restart mid-reply the other
    process's stream then missed the text sent during the outage (`test_multiprocess_resilience.py::
    test_redis_restart_mid_reply...` failed 2 runs in 3, passed 3 in 3 with channels_redis's receive)."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert self.require_valid_group_name(group), "Group name not valid"
        key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        async with connection.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
            pipe.zrange(key, 0, -1)
            _, members = await pipe.execute()
        if not members:
            return
        channel_names = [member.decode("utf8") for member in members]
        by_connection, messages, capacities = self._map_channel_keys_to_connection(channel_names, message)
        for index, channel_keys in by_connection.items():
            args = [messages[k] for k in channel_keys] + [capacities[k] for k in channel_keys]
            args += [time.time(), self.expiry]
            target = self.connection(index)
            try:
                await target.evalsha(_GROUP_SEND_SHA, len(channel_keys), *channel_keys, *args)
            except NoScriptError:  # a Redis that (re)started since: load the script, then send
                await target.script_load(_GROUP_SEND)
                await target.evalsha(_GROUP_SEND_SHA, len(channel_keys), *channel_keys, *args)
