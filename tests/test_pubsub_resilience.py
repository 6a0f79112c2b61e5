"""The channel-layer plumbing that keeps replies alive through Redis trouble: the connection settings, the
bounded back-off, and `pubsub.listen` across a real Redis restart."""

from __future__ import annotations

import ast
import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat.streaming import layers, pubsub
from tests.support.asgi_client import AsgiClient
from tests.support.cluster import RedisMonitor, RedisServer
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.live_server import manage
from tests.support.settings_process import settings_value
from tests.support.streams import start_conversation
from tests.support.waiting import until

# The server runs on uvloop (chatsite/serve.py): the layer's Redis connections must work on both loops.
pytestmark = pytest.mark.uvloop_too


def test_backoff_doubles_up_to_its_cap_and_starts_again_after_a_success() -> None:
    backoff = pubsub.Backoff(first=0.1, cap=1.0)
    assert [backoff.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for _ in range(5000):  # a long outage: still bounded, and no overflow
        assert backoff.next() == 1.0
    backoff.reset()
    assert backoff.next() == 0.1


def test_the_redis_settings_bound_commands_and_connects_and_keep_connections_alive(tmp_path: Path) -> None:
    """The Redis layer's settings: a command that gets no answer fails (a dead Redis must not hang a
    producer's publish), a connect gives up soon, TCP keepalive is on."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REDIS_"))},
        "REDIS_URL": "redis://127.0.0.1:6379/0",  # never connected to: only the settings are read
        "DATA_DIR": str(tmp_path),
    }
    out = manage(env, "shell", "-c", "from django.conf import settings; print(repr(settings.CHANNEL_LAYERS))")
    layers: dict[str, Any] = ast.literal_eval(out.strip().splitlines()[-1])
    assert layers["default"]["BACKEND"] == "chat.streaming.layers.RedisPubSubLayer"
    (host,) = layers["default"]["CONFIG"]["hosts"]
    assert 0 < host["socket_timeout"] <= 60 and 0 < host["socket_connect_timeout"] <= 5
    assert host["socket_keepalive"] is True
    assert layers["default"]["CONFIG"]["publish_every"] == 0.005  # REDIS_PUBLISH_EVERY_MS's default


def test_a_publish_interval_out_of_range_is_refused_at_start_up() -> None:
    name = "REDIS_PUBLISH_EVERY_MS"
    unset = ("DEBUG", "SECRET_KEY", name)
    assert settings_value({"DEBUG": "True", name: "0"}, name, unset=unset) == "0.0"
    for wrong in ("-1", "5000"):
        with pytest.raises(AssertionError, match=f"{name} must be from 0 to 1000 milliseconds, not {wrong}"):
            settings_value({"DEBUG": "True", name: wrong}, name, unset=unset)


@pytest.fixture
def restartable_redis(tmp_path: Path, settings: Any) -> Iterator[RedisServer]:
    """A private Redis as this process's channel layer."""
    server = RedisServer(tmp_path).start()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.streaming.layers.RedisPubSubLayer",
            "CONFIG": {"hosts": [{"address": server.url, "socket_timeout": 15, "socket_connect_timeout": 2}]},
        }
    }
    yield server
    server.stop()


@pytest.mark.redis
async def test_listen_receives_again_after_redis_restarts(restartable_redis: RedisServer) -> None:
    layer = pubsub.layer()
    channel = await layer.new_channel("test.")
    assert await pubsub.join(channel, ["listeners"])
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read() -> None:
        async for message in pubsub.listen(channel, ["listeners"], backoff=pubsub.Backoff(0.05, 0.5)):
            inbox.put_nowait(message)

    reader = asyncio.create_task(read())
    try:
        assert await pubsub.publish("listeners", {"type": "test.one"})
        assert (await asyncio.wait_for(inbox.get(), 10))["type"] == "test.one"

        restartable_redis.kill()
        # Sends fail quietly while Redis is away; the reader keeps trying, it does not die.
        await _sends_fail_once_noticed("listeners")
        await asyncio.sleep(0.3)
        assert not reader.done()

        restartable_redis.start()  # empty: the group membership is gone with the old Redis
        assert (await asyncio.wait_for(inbox.get(), 10))["type"] == pubsub.RESUMED
        # Re-joined: a message to the group reaches it again (sends resumed when the reader got back).
        assert await pubsub.publish("listeners", {"type": "test.two"})
        # The first receive after the restart may fail once more (the pool still held a connection to the
        # old server): then the reader resumes again, and says so again, before the message arrives.
        message = await asyncio.wait_for(inbox.get(), 10)
        while message["type"] == pubsub.RESUMED:
            message = await asyncio.wait_for(inbox.get(), 10)
        assert message["type"] == "test.two"
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await layer.flush()


@pytest.mark.redis
async def test_a_process_receiving_on_two_channels_starves_neither(restartable_redis: RedisServer) -> None:
    """A process that generates a reply (control channel) and streams one (subscriber channel) receives on
    both at once. channels_redis lets one receive() block on Redis at a time: both channels must live in the
    key it blocks on, or the other one gets nothing until the blocked one receives."""
    layer = pubsub.layer()
    control, inbox = await pubsub.new_channel(), await pubsub.new_channel()
    blocked = asyncio.create_task(layer.receive(control))  # nothing comes for it
    await asyncio.sleep(0.2)  # it now holds the process's receive lock, blocked in Redis
    reader = asyncio.create_task(layer.receive(inbox))
    try:
        await layer.send(inbox, {"type": "test.chunk"})
        done, _ = await asyncio.wait({reader}, timeout=10)  # bounded, and never cancels a receive early
        assert reader in done, "the second channel starved while the first one blocked"
        assert reader.result()["type"] == "test.chunk"
        assert not blocked.done()
    finally:
        for task in (blocked, reader):
            task.cancel()
        await asyncio.gather(blocked, reader, return_exceptions=True)
        await layer.flush()


@pytest.mark.redis
async def test_stop_listening_ends_a_receive_loop_without_cancelling_it(
    restartable_redis: RedisServer,
) -> None:
    """A producer ends its control loop, and a stream its reader, by sending EXIT to their own channel: the
    receive returns normally. Cancelling a receive blocked in Redis was seen to be absorbed (the task stayed
    'cancelling' inside channels_redis) and loses the channel's buffer."""
    layer = pubsub.layer()
    channel, other = await pubsub.new_channel(), await pubsub.new_channel()
    seen: list[str] = []

    async def loop() -> None:
        async for message in pubsub.listen(channel, []):
            seen.append(message["type"])

    looping = asyncio.create_task(loop())
    neighbour = asyncio.create_task(layer.receive(other))  # another receiver in the same process
    try:
        await asyncio.sleep(0.2)
        await layer.send(channel, {"type": "test.before"})
        await pubsub.stop_listening(looping, channel)
        assert looping.done() and not looping.cancelled() and looping.exception() is None
        assert seen == ["test.before"]  # what came before EXIT was delivered; EXIT itself is not
        await layer.send(other, {"type": "test.after"})
        done, _ = await asyncio.wait({neighbour}, timeout=10)
        assert neighbour in done and neighbour.result()["type"] == "test.after"
    finally:
        for task in (looping, neighbour):
            task.cancel()
        await asyncio.gather(looping, neighbour, return_exceptions=True)
        await layer.flush()


@pytest.mark.redis
async def test_group_sends_reach_every_member_once_and_a_left_group_sends_nothing(
    restartable_redis: RedisServer,
) -> None:
    """A group send reaches each member once, in order, and a channel that left a group gets nothing more
    from it (and, in no group at all, has no queue left behind here)."""
    layer = pubsub.layer()
    first, second = await pubsub.new_channel(), await pubsub.new_channel()
    assert await pubsub.join(first, ["audience", "other"]) and await pubsub.join(second, ["audience"])
    try:
        await layer.group_send("nobody", {"type": "test.void"})  # an empty group: nothing to do, no error
        await layer.group_send("audience", {"type": "test.one"})
        await layer.group_send("audience", {"type": "test.two"})
        for channel in (first, second):
            got = [(await asyncio.wait_for(layer.receive(channel), 10))["type"] for _ in range(2)]
            assert got == ["test.one", "test.two"]
        await pubsub.leave(first, ["audience"])
        await layer.group_send("audience", {"type": "test.three"})
        await layer.group_send("other", {"type": "test.other"})
        assert (await asyncio.wait_for(layer.receive(second), 10))["type"] == "test.three"
        assert (await asyncio.wait_for(layer.receive(first), 10))["type"] == "test.other"  # not three
        await pubsub.leave(first, ["other"])
        assert first not in layer._state().queues
    finally:
        await layer.flush()


@pytest.mark.redis
async def test_a_send_here_reaches_this_loops_receivers_at_once_and_nothing_goes_through_redis(
    restartable_redis: RedisServer,
) -> None:
    """`publish_here`/`send_here` (a producer whose streams all read in its own process): this loop's
    members get the sender's dict at once; Redis runs no PUBLISH, and a member elsewhere (a second layer
    with its own subscriptions, as another process has) gets nothing. The layer's group send still reaches
    both."""
    here = pubsub.layer()
    elsewhere = layers.RedisPubSubLayer(hosts=[{"address": restartable_redis.url}])
    mine, theirs = await here.new_channel(), await elsewhere.new_channel()
    got_mine: list[dict[str, Any]] = []
    got_theirs: list[dict[str, Any]] = []
    assert pubsub.attach(mine, got_mine.append)
    elsewhere.attach(theirs, got_theirs.append)
    await here.group_add("audience", mine)
    await elsewhere.group_add("audience", theirs)
    try:
        assert pubsub.delivers_here() and pubsub.is_here(mine) and not pubsub.is_here(theirs)
        with RedisMonitor(restartable_redis) as monitor:
            message = {"type": "test.here"}
            pubsub.publish_here("audience", message)
            assert got_mine == [message] and got_mine[0] is message  # delivered in the call: no copy
            pubsub.send_here(mine, {"type": "test.direct"})
            assert [m["type"] for m in got_mine] == ["test.here", "test.direct"]
            assert monitor.published("asgi:group:audience") == 0
            await here.group_send("audience", {"type": "test.everyone"})
            await until(lambda: len(got_theirs) == 1 and len(got_mine) == 3, "the layer's group send")
            assert monitor.published("asgi:group:audience") == 1
        assert [m["type"] for m in got_theirs] == ["test.everyone"]  # never the two sent here
    finally:
        await here.flush()
        await elsewhere.flush()


@pytest.fixture
def slow_writing_redis(restartable_redis: RedisServer, settings: Any) -> RedisServer:
    """The private Redis as the channel layer, batched PUBLISHes written at most once a minute: whatever
    reaches another process within a test's bound was not held for the interval."""
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["publish_every"] = 60.0
    settings.CHANNEL_LAYERS = dict(settings.CHANNEL_LAYERS)  # a new value: the layer is made again
    return restartable_redis


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_what_a_reader_elsewhere_waits_for_crosses_at_once_and_the_reply_keeps_its_order(
    slow_writing_redis: RedisServer, alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    """A reader in another process (a second layer, with its own connections and channel names) asks this
    process's producer for a sync. The answer and the reply's first delta reach it within the test's bound,
    a third of the write interval: neither waited for it. The second delta is batched; `end`, which is not,
    takes it along: everything arrives, in order. (With the first delta batched too, it is held until the
    upstream's read timeout ends the reply, and "lo" never comes.)"""
    first, second = threading.Event(), threading.Event()
    upstream.enqueue(Wait(first, timeout=20), Text("Hel"), Wait(second, timeout=20), Text("lo"), End())
    _, reply, _ = await start_conversation(alice_client)
    elsewhere = layers.RedisPubSubLayer(hosts=[{"address": slow_writing_redis.url}], publish_every=60.0)
    got: list[dict[str, Any]] = []
    channel = await elsewhere.new_channel()
    elsewhere.attach(channel, got.append)
    await elsewhere.group_add(pubsub.audience_group(reply.pk), channel)
    admin = slow_writing_redis.client()
    control = f"asgi:group:{pubsub.control_group(reply.pk)}"
    try:
        await until(lambda: admin.pubsub_numsub(control)[0][1] == 1, "the producer listening for syncs")
        sync = {"type": pubsub.SYNC, "reply_to": channel, "offset": 0, "thinking_offset": 0, "done": 0}
        await elsewhere.group_send(pubsub.control_group(reply.pk), sync)
        await until(lambda: any(m["type"] == pubsub.CHUNK for m in got), "the sync's answer", timeout=20)
        first.set()
        await until(lambda: any(m.get("text") == "Hel" for m in got), "the first delta", timeout=20)
        assert not second.is_set()  # the upstream has not even sent the second
        second.set()
        await until(lambda: got[-1]["type"] == pubsub.END, "the end", timeout=20)
        assert [(m["type"], m.get("text")) for m in got] == [
            (pubsub.THINKING, ""),
            (pubsub.CHUNK, ""),
            (pubsub.CHUNK, "Hel"),
            (pubsub.CHUNK, "lo"),
            (pubsub.END, None),
        ]
    finally:
        admin.close()
        await elsewhere.flush()


@pytest.mark.redis
async def test_a_quiet_subscription_outlives_its_socket_timeout(restartable_redis: RedisServer) -> None:
    """The pub/sub connection waits for messages as long as the channels are quiet, pinging Redis to know
    it is alive: a spell longer than the socket timeout is not taken for a lost connection."""
    from chat.streaming.layers import RedisPubSubLayer

    layer = RedisPubSubLayer(
        hosts=[{"address": restartable_redis.url, "socket_timeout": 0.3, "socket_connect_timeout": 2}]
    )
    layer.QUIET = 0.1
    channel = await layer.new_channel()
    await layer.group_add("quiet", channel)
    try:
        await asyncio.sleep(1.5)  # five socket timeouts without a message
        await layer.group_send("quiet", {"type": "test.after"})
        assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "test.after"
    finally:
        await layer.flush()


@pytest.mark.redis
async def test_concurrent_senders_each_arrive_in_order(restartable_redis: RedisServer) -> None:
    """The layer writes the PUBLISHes of one turn of the loop together: each sender's messages still arrive
    in the order it sent them, none lost or doubled."""
    layer = pubsub.layer()
    channels = [await pubsub.new_channel() for _ in range(3)]
    for index, channel in enumerate(channels):
        assert await pubsub.join(channel, [f"reply.{index}"])

    async def send_all(index: int) -> None:
        for number in range(50):
            await layer.group_send(f"reply.{index}", {"type": "test.n", "n": number})

    try:
        await asyncio.gather(*(send_all(index) for index in range(3)))
        for channel in channels:
            got = [(await asyncio.wait_for(layer.receive(channel), 10))["n"] for _ in range(50)]
            assert got == list(range(50))
    finally:
        await layer.flush()


async def _sends_fail_once_noticed(group: str) -> None:
    """A send fails (quietly: False) once this process has noticed that Redis is gone, within moments. A
    send in the instant before that is lost without an error, as a message in flight always was: the
    layer's PUBLISHes are not answered (`resp.Connection.post`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while await pubsub.publish(group, {"type": "test.lost"}):
        assert loop.time() < deadline, "sends still reported as sent 5 s after Redis died"
        await asyncio.sleep(0.01)


async def _take(inbox: asyncio.Queue[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The next message of `kind` in `inbox`, skipping extra RESUMEDs (a pool may still hold a connection to
    the old server, so the first read after a restart can fail once more)."""
    while True:
        message = await asyncio.wait_for(inbox.get(), 10)
        if message["type"] == kind:
            return message
        assert message["type"] == pubsub.RESUMED, message


@pytest.mark.redis
async def test_an_attached_channel_gets_its_messages_without_a_receive_and_resumes_after_a_restart(
    restartable_redis: RedisServer,
) -> None:
    """What an event stream relies on with Redis: a group send and a direct send reach the attached sink
    with no receive() and no task of the stream's own; after Redis restarts the sink is told RESUMED (so it
    syncs), its groups are subscribed again by the layer, and sends go through at once."""
    layer = pubsub.layer()
    channel = await pubsub.new_channel()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    assert pubsub.attach(channel, inbox.put_nowait)
    assert await pubsub.join(channel, ["audience", "mine"])
    try:
        assert await pubsub.publish("audience", {"type": "test.one"})
        assert await pubsub.send(channel, {"type": "test.direct"})
        assert [(await asyncio.wait_for(inbox.get(), 10))["type"] for _ in range(2)] == [
            "test.one",
            "test.direct",
        ]
        assert channel not in layer._state().queues  # nothing queued for it: the sink took them

        restartable_redis.kill()
        await _sends_fail_once_noticed("audience")
        restartable_redis.start()  # empty: it knows no subscription of this process
        assert (await asyncio.wait_for(inbox.get(), 10))["type"] == pubsub.RESUMED
        # No re-join by the stream: the layer subscribed its groups again. The sync that RESUMED prompts
        # goes out at once, not after the sends' back-off.
        assert await pubsub.publish("mine", {"type": "test.two"})
        assert (await _take(inbox, "test.two"))["type"] == "test.two"
        assert await pubsub.publish("audience", {"type": "test.three"})
        assert (await _take(inbox, "test.three"))["type"] == "test.three"

        pubsub.detach(channel)
        await pubsub.leave(channel, ["audience", "mine"])
        assert await pubsub.publish("audience", {"type": "test.gone"})
        await asyncio.sleep(0.3)
        assert inbox.empty()
    finally:
        await layer.flush()


@pytest.mark.redis
async def test_an_attached_channel_that_joined_while_redis_was_down_is_subscribed_once_it_is_back(
    restartable_redis: RedisServer,
) -> None:
    """A stream that opens while Redis is down: its join fails, yet every one of its groups is recorded, and
    once Redis is back the layer subscribes them all and tells the sink RESUMED."""
    layer = pubsub.layer()
    restartable_redis.kill()
    channel = await pubsub.new_channel()  # returns: Redis is known to be down
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    assert pubsub.attach(channel, inbox.put_nowait)
    try:
        assert not await pubsub.join(channel, ["audience", "user", "session"])
        restartable_redis.start()
        assert (await asyncio.wait_for(inbox.get(), 15))["type"] == pubsub.RESUMED
        for group in ("audience", "user", "session"):
            assert await pubsub.publish(group, {"type": f"test.{group}"})
            assert (await _take(inbox, f"test.{group}"))["type"] == f"test.{group}"
    finally:
        await layer.flush()


@pytest.mark.redis
async def test_a_failing_receiver_loses_its_message_not_the_connection(
    restartable_redis: RedisServer,
) -> None:
    """A sink that raises (a bug in one stream) drops that message for that stream only: the other members
    of the group get it, and the process's pub/sub connection stays up (no RESUMED to anyone)."""
    layer = pubsub.layer()
    broken, healthy = await pubsub.new_channel(), await pubsub.new_channel()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def explode(message: dict[str, Any]) -> None:
        raise RuntimeError("a receiver's bug")

    assert pubsub.attach(broken, explode) and pubsub.attach(healthy, inbox.put_nowait)
    assert await pubsub.join(broken, ["audience"]) and await pubsub.join(healthy, ["audience"])
    try:
        for n in range(3):
            assert await pubsub.publish("audience", {"type": "test.n", "n": n})
        got = [await asyncio.wait_for(inbox.get(), 10) for _ in range(3)]
        assert [m.get("n") for m in got] == [0, 1, 2]  # in order, and no RESUMED among them
        assert layer._state().pubsub is not None
    finally:
        await layer.flush()
