"""The Redis wire under the pub/sub channel layer (`chat.streaming.resp`): addresses, replies in order,
error replies, pushes, quiet (unanswered) PUBLISHes and their liveness probe, credentials, ACL refusals,
a Unix socket, TLS, and what a stopped or killed Redis does to waiting commands. Against a real private
redis-server, on both event loops the app runs on (asyncio in tests, uvloop in the server)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest

from chat.streaming import resp
from chat.streaming.layers import RedisPubSubLayer
from tests.support.cluster import RedisServer, self_signed_certificate

# uvloop's transports are not asyncio.Transport subclasses, which once broke the connection's first callback.
pytestmark = pytest.mark.uvloop_too


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


# --- addresses (pure) -----------------------------------------------------------------------------------


def test_an_address_url_gives_host_port_credentials_and_the_socket_options() -> None:
    address = resp.Address.from_host(
        {
            "address": "redis://alice:s3cret@10.0.0.5:6380/2",
            "socket_timeout": 15,
            "socket_connect_timeout": 2,
            "socket_keepalive": True,
        }
    )
    assert (address.host, address.port, address.path) == ("10.0.0.5", 6380, None)
    assert (address.username, address.password) == ("alice", "s3cret")
    assert (address.answer_within, address.connect_timeout, address.keepalive) == (15.0, 2.0, True)
    assert not address.tls and address.tls_context() is None


def test_tls_unix_sockets_and_host_port_entries_are_understood() -> None:
    tls = resp.Address.from_host({"address": "rediss://:pw@redis.example:6390/0"})
    assert tls.tls and tls.password == "pw" and tls.username is None
    context = tls.tls_context()
    assert context is not None and context.check_hostname
    unverified = resp.Address.from_host({"address": "rediss://redis.example?ssl_cert_reqs=none"})
    context = unverified.tls_context()
    assert context is not None and not context.check_hostname

    unix = resp.Address.from_host({"address": "unix:///run/redis.sock"})
    assert unix.path == "/run/redis.sock"

    pair = resp.Address.from_host({"host": "127.0.0.2", "port": 6381})
    assert (pair.host, pair.port, pair.password, pair.answer_within) == ("127.0.0.2", 6381, None, 15.0)


def test_sentinel_hosts_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Sentinel"):
        resp.Address.from_host({"sentinels": [("127.0.0.1", 26379)], "master_name": "main"})


# --- a real redis-server --------------------------------------------------------------------------------


def _address(server: RedisServer, **options: Any) -> resp.Address:
    return resp.Address.from_host({"address": server.url, **options})


@pytest.mark.redis
async def test_replies_come_back_to_their_commands_in_order(redis_server: RedisServer) -> None:
    connection = await resp.connect(_address(redis_server))
    try:
        # Many commands in one turn of the loop (one write); each future gets its own reply.
        calls = [connection.call("SET", f"k{n}", n) for n in range(200)]
        calls += [connection.call("GET", f"k{n}") for n in range(200)]
        replies = await asyncio.gather(*calls)
        assert replies[:200] == [b"OK"] * 200
        assert replies[200:] == [str(n).encode() for n in range(200)]
        assert await connection.call("PUBLISH", "nobody", b"\x00\xffbinary") == 0
    finally:
        connection.close()


@pytest.mark.redis
async def test_an_error_reply_fails_its_command_only(redis_server: RedisServer) -> None:
    connection = await resp.connect(_address(redis_server))
    try:
        wrong, right = connection.call("NOSUCHCOMMAND"), connection.call("PING")
        with pytest.raises(hiredis.ReplyError, match="unknown command"):
            await wrong
        assert await right == b"PONG"
        assert not connection.lost
    finally:
        connection.close()


@contextlib.asynccontextmanager
async def _subscribed(server: RedisServer, channel: str) -> AsyncIterator[tuple[resp.Connection, list[Any]]]:
    """A publishing connection, and what a second one subscribed to `channel` has been pushed (its
    subscription confirmed: the first item)."""
    pushed: list[Any] = []
    subscriber = await resp.connect(_address(server), on_push=pushed.append)
    publisher = await resp.connect(_address(server))
    try:
        subscriber.send("SUBSCRIBE", channel)
        await _until(lambda: len(pushed) >= 1)
        yield publisher, pushed
    finally:
        subscriber.close()
        publisher.close()


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.redis
async def test_pushed_messages_go_to_on_push(redis_server: RedisServer) -> None:
    async with _subscribed(redis_server, "news") as (publisher, pushed):
        assert pushed == [[b"subscribe", b"news", 1]]
        assert await publisher.call("PUBLISH", "news", b"one") == 1
        await _until(lambda: len(pushed) >= 2)
        assert pushed[1] == [b"message", b"news", b"one"]


@pytest.mark.redis
async def test_a_killed_redis_fails_waiting_commands_and_resolves_closed(redis_server: RedisServer) -> None:
    connection = await resp.connect(_address(redis_server))
    redis_server.kill()
    await asyncio.wait_for(asyncio.shield(connection.closed), 10)
    assert connection.lost
    with pytest.raises(ConnectionError):
        await connection.call("PING")


@pytest.mark.redis
async def test_a_redis_that_stops_answering_fails_the_command_within_its_timeout(
    redis_server: RedisServer,
) -> None:
    """SIGSTOP: the socket stays open and nothing answers, as with a hung server. The command fails
    after `socket_timeout`, the connection is broken (its owner reconnects), and nothing hangs."""
    connection = await resp.connect(_address(redis_server, socket_timeout=0.3))
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="did not answer"):
            await asyncio.wait_for(connection.call("PING"), 10)
        assert time.monotonic() - started >= 0.3
        assert connection.closed.done() and connection.lost
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        connection.close()


@pytest.mark.redis
async def test_a_quiet_connection_posts_unanswered_in_order(redis_server: RedisServer) -> None:
    async with _subscribed(redis_server, "deltas") as (publisher, pushed):
        publisher.go_quiet()
        publisher.PROBE_EVERY = 0.0  # a probe with every post: their answers must not be taken for pushes
        for n in range(300):
            publisher.post("PUBLISH", "deltas", str(n))
            if n % 50 == 0:
                await asyncio.sleep(0)
        await _until(lambda: len(pushed) >= 301)
        assert [m[2] for m in pushed[1:]] == [str(n).encode() for n in range(300)]
        assert not publisher.lost
        with pytest.raises(RuntimeError, match="quiet"):
            await publisher.call("PING")


@pytest.mark.redis
async def test_a_quiet_connection_writing_at_most_every_interval_holds_a_post_and_sends_the_next_with_it(
    redis_server: RedisServer,
) -> None:
    """`go_quiet(write_every=)`: a post made within the interval after a write is held, and the posts made
    meanwhile go out with it, in order. (The interval is long so that "held" is not a race: three round
    trips on another connection take far less.)"""
    async with _subscribed(redis_server, "deltas") as (publisher, pushed):
        publisher.go_quiet(write_every=2.0)
        probe = await resp.connect(_address(redis_server))
        try:
            publisher.post("PUBLISH", "deltas", b"a")
            await _until(lambda: len(pushed) >= 2)  # written, so the interval has begun
            publisher.post("PUBLISH", "deltas", b"b")
            for _ in range(3):
                assert await probe.call("PING") == b"PONG"
            assert [m[2] for m in pushed[1:]] == [b"a"]  # Redis is answering, and `b` has not reached it
            publisher.post("PUBLISH", "deltas", b"c")
            await _until(lambda: len(pushed) >= 4)
            assert [m[2] for m in pushed[1:]] == [b"a", b"b", b"c"]
            assert not publisher.lost
        finally:
            probe.close()


@pytest.mark.redis
async def test_a_post_wanted_now_goes_within_the_interval_and_takes_the_held_posts_with_it_in_order(
    redis_server: RedisServer,
) -> None:
    """`post(now=True)` (a reply's first delta, a sync's answer) does not wait for `write_every`: it goes at
    the end of its turn, with every post held before it and those made in the same turn, in order. (The
    interval is a minute: what arrives within `_until`'s ten seconds was not let out by it.)"""
    async with _subscribed(redis_server, "deltas") as (publisher, pushed):
        publisher.go_quiet(write_every=60.0)
        publisher.post("PUBLISH", "deltas", b"a")
        await _until(lambda: len(pushed) >= 2)  # written at once (a quiet spell): the interval has begun
        publisher.post("PUBLISH", "deltas", b"b")  # held for the interval
        publisher.post("PUBLISH", "deltas", b"c", now=True)
        publisher.post("PUBLISH", "deltas", b"d")  # made in the same turn: in the same write
        await _until(lambda: len(pushed) >= 5)
        assert [m[2] for m in pushed[1:]] == [b"a", b"b", b"c", b"d"]
        publisher.post("PUBLISH", "deltas", b"e", now=True)  # nothing held: at once too
        await _until(lambda: len(pushed) >= 6)
        assert pushed[-1][2] == b"e"
        assert not publisher.lost


@pytest.mark.redis
async def test_a_quiet_connection_notices_a_redis_that_stops_answering(redis_server: RedisServer) -> None:
    """Nothing answers a post; the probe that goes with one does, and its silence breaks the connection
    within `socket_timeout`, after which posts raise."""
    publisher = await resp.connect(_address(redis_server, socket_timeout=0.3))
    publisher.go_quiet()
    publisher.PROBE_EVERY = 0.0
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        publisher.post("PUBLISH", "deltas", b"into the void")
        failure = await asyncio.wait_for(asyncio.shield(publisher.closed), 10)
        assert "did not answer" in str(failure)
        with pytest.raises(ConnectionError, match="did not answer"):
            publisher.post("PUBLISH", "deltas", b"after")
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        publisher.close()


@pytest.mark.redis
async def test_a_redis_that_refuses_the_layers_publishes_says_why(redis_server: RedisServer) -> None:
    """An ACL that allows no channels: the layer's first PUBLISH is answered (before it goes quiet), so the
    refusal reaches the sender with Redis's reason instead of vanishing."""
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "nochannels", "on", ">pw", "~*", "resetchannels", "+@all")
    admin.close()
    layer = RedisPubSubLayer(hosts=[{"address": f"redis://nochannels:pw@127.0.0.1:{redis_server.port}/0"}])
    try:
        with pytest.raises(hiredis.ReplyError, match="NOPERM"):
            await layer.group_send("audience", {"type": "test.refused"})
    finally:
        await layer.flush()


@pytest.mark.redis
async def test_a_redis_that_refuses_the_layers_subscriptions_says_why_at_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Channels allowed for PUBLISH to groups only: the reader's pattern subscription is refused, and the
    log says so with Redis's reason, without waiting out the socket timeout (15 s here)."""
    admin = redis_server.client()
    admin.execute_command(
        "ACL", "SETUSER", "groupsonly", "on", ">pw", "~*", "resetchannels", "&asgi:group:*", "+@all"
    )
    admin.close()
    layer = RedisPubSubLayer(
        hosts=[{"address": f"redis://groupsonly:pw@127.0.0.1:{redis_server.port}/0", "socket_timeout": 15}]
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="chat.streaming.layers"):
        channel = await layer.new_channel()
        with pytest.raises(ConnectionError):
            await layer.group_add("audience", channel)
    await layer.flush()
    assert time.monotonic() - started < 5
    (said,) = [r.getMessage() for r in caplog.records if "cannot subscribe on Redis" in r.getMessage()]
    assert "NOPERM" in said


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[int]:
    server = RedisServer(tmp_path, password="s3cret").start()
    yield server.port
    server.stop()


@pytest.mark.redis
async def test_credentials_in_the_url_sign_in_and_wrong_ones_are_refused(
    redis_with_password: int, caplog: pytest.LogCaptureFixture
) -> None:
    port = redis_with_password
    with pytest.raises(hiredis.ReplyError):
        await resp.connect(resp.Address.from_host({"address": f"redis://:wrong@127.0.0.1:{port}/0"}))

    anonymous = await resp.connect(resp.Address.from_host({"address": f"redis://127.0.0.1:{port}/0"}))
    try:
        with pytest.raises(hiredis.ReplyError, match="NOAUTH"):
            await anonymous.call("PUBLISH", "x", b"y")
    finally:
        anonymous.close()

    # The layer with a wrong password: joining fails, and the log says why, without the password.
    wrong = RedisPubSubLayer(hosts=[{"address": f"redis://:typo-s3cret@127.0.0.1:{port}/0"}])
    with caplog.at_level(logging.WARNING, logger="chat.streaming.layers"):
        channel = await wrong.new_channel()
        with pytest.raises(ConnectionError):
            await wrong.group_add("signed-in", channel)
    await wrong.flush()
    (said,) = [r.getMessage() for r in caplog.records if "cannot subscribe on Redis" in r.getMessage()]
    assert f"redis://127.0.0.1:{port}" in said and "WRONGPASS" in said and "typo-s3cret" not in said

    # The whole layer on that Redis, signed in.
    await _a_group_message_arrives(f"redis://:s3cret@127.0.0.1:{port}/0")


async def _a_group_message_arrives(address: str) -> None:
    """A layer on `address`: a message sent to a group reaches a member's channel."""
    layer = RedisPubSubLayer(hosts=[{"address": address}])
    channel = await layer.new_channel()
    await layer.group_add("members", channel)
    try:
        await layer.group_send("members", {"type": "test.hello"})
        assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "test.hello"
    finally:
        await layer.flush()


@pytest.fixture
def redis_on_a_unix_socket(tmp_path: Path) -> Iterator[Path]:
    server = RedisServer(tmp_path, unix_socket=tmp_path / "redis.sock").start()
    assert server.unix_socket is not None
    yield server.unix_socket
    server.stop()


@pytest.mark.redis
async def test_the_layer_works_over_a_unix_socket(redis_on_a_unix_socket: Path) -> None:
    await _a_group_message_arrives(f"unix://{redis_on_a_unix_socket}")


@pytest.mark.redis
async def test_the_layer_works_over_tls_and_refuses_a_server_it_cannot_verify(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, tls=self_signed_certificate(tmp_path)).start()
    try:
        await _a_group_message_arrives(server.url)  # rediss://…?ssl_ca_certs=<the server's own CA>
        untrusted = resp.Address.from_host({"address": f"rediss://127.0.0.1:{server.port}/0"})
        with pytest.raises(ssl.SSLCertVerificationError):
            await resp.connect(untrusted)  # the system's CAs do not know it
        unverified = f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=none"
        (await resp.connect(resp.Address.from_host({"address": unverified}))).close()
    finally:
        server.stop()


@pytest.mark.redis
async def test_the_layer_delivers_on_this_loop_to_queues_and_sinks(redis_server: RedisServer) -> None:
    """Both kinds of receiver, group and direct sends, on each event loop."""
    layer = RedisPubSubLayer(hosts=[{"address": redis_server.url}])
    queued = await layer.new_channel()
    sunk = await layer.new_channel()
    got: list[dict[str, Any]] = []
    layer.attach(sunk, got.append)
    await layer.group_add("both", queued)
    await layer.group_add("both", sunk)
    try:
        await layer.group_send("both", {"type": "test.group", "n": 1})
        await layer.send(queued, {"type": "test.direct"})
        assert (await asyncio.wait_for(layer.receive(queued), 10))["type"] == "test.group"
        assert (await asyncio.wait_for(layer.receive(queued), 10))["type"] == "test.direct"
        while not any(message["type"] == "test.group" for message in got):
            await asyncio.sleep(0.01)
        assert [m for m in got if m["type"] == "test.group"] == [{"type": "test.group", "n": 1}]
    finally:
        layer.detach(sunk)
        await layer.flush()
