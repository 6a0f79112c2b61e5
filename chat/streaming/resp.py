"""A Redis connection spoken to directly on an asyncio protocol: commands packed and replies parsed by
hiredis (Redis's own C parser), with nothing else between the socket and the caller.

Why: the pub/sub channel layer (`layers.RedisPubSubLayer`) sends one PUBLISH per delta and gets one
message pushed per delta. Through redis-py each of those is a chain of coroutines (a pool checkout, a retry
wrapper, a timeout context, a buffered stream read per line, a dict built per pushed message): in the
bench's one-process Redis mode (issue 15, session 16, py-spy `--gil`, N=50) redis-py was on the stack in
24 % of the process's samples. Here a reply or a pushed message costs one `gets()` in `data_received`, and
the commands made in one turn of the event loop go out in one write. Measured: one process, 50 senders
of 300 group messages each, every message through a private redis-server to an attached receiver in the
same process: 22-28 µs of CPU per message through redis-py (with hiredis's parser), 7.8-10.4 µs here,
3.6-4.0 µs on the in-process layer (all three include the senders' own timers). In the bench's Redis mode
(two processes, N=50) CPU per delta went from 1.8x to 1.4-1.5x one in-memory process's.

What it does: RESP2 over TCP (TLS with `rediss://`) or a Unix socket, AUTH when the address has
credentials, TCP keepalive on request, and a quiet mode for PUBLISHes (`Connection.go_quiet`). A
command's reply resolves its future in order; a reply nobody waits for (a pub/sub push, a subscription's
confirmation, a PING's `pong` on a subscribed connection) goes to `on_push`. A command that gets no reply
within `answer_within` seconds breaks the connection, and a broken connection fails every command waiting
on it: callers never hang on a dead Redis. It does not reconnect: its owner does (the layer's reader for
pub/sub, the next PUBLISH for commands). No RESP3, no Sentinel, no Cluster."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url

Push = Callable[[Any], None]
ReplyError = hiredis.ReplyError  # an error reply: what `call` raises, what `on_push` gets for a refusal


def _pack(args: tuple[str | bytes | int, ...]) -> bytes:
    # hiredis's stub types its argument as a 1-tuple; it takes any number of parts.
    return hiredis.pack_command(args)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Address:
    """Where Redis is and how to sign in to it."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a Unix socket, in place of host and port
    username: str | None = None
    password: str | None = None
    tls: bool = False
    verify_tls: bool = True
    ca_certs: str | None = None  # a CA bundle to verify the server by, in place of the system's
    connect_timeout: float = 5.0
    answer_within: float = 15.0  # seconds a command may wait for its reply
    keepalive: bool = False

    @classmethod
    def from_host(cls, host: dict[str, Any]) -> Address:
        """From one entry of channels_redis's `hosts` (after `decode_hosts`): `{"address": URL, ...}` or
        `{"host": ..., "port": ..., "password": ...}`, with redis-py's `socket_timeout`,
        `socket_connect_timeout` and `socket_keepalive`; for TLS (`rediss://`) its `ssl_cert_reqs` and
        `ssl_ca_certs`, also as the URL's query (`?ssl_ca_certs=/path/ca.pem`). Sentinels are not
        supported."""
        if "sentinels" in host or "master_name" in host:
            raise ValueError("the Redis pub/sub channel layer does not support Sentinel; give one address")
        options = dict(host)
        if "address" in options:
            options.update(parse_url(options.pop("address")))
        connection_class = options.get("connection_class")
        tls = bool(options.get("ssl")) or (
            connection_class is not None and connection_class.__name__ == "SSLConnection"
        )
        return cls(
            host=str(options.get("host") or "127.0.0.1"),
            port=int(options.get("port") or 6379),
            path=options.get("path"),
            username=options.get("username"),
            password=options.get("password"),
            tls=tls,
            verify_tls=str(options.get("ssl_cert_reqs", "required")).lower() not in {"none", "0"},
            ca_certs=options.get("ssl_ca_certs"),
            connect_timeout=float(options.get("socket_connect_timeout") or 5.0),
            answer_within=float(options.get("socket_timeout") or 15.0),
            keepalive=bool(options.get("socket_keepalive")),
        )

    def where(self) -> str:
        """The address for a log line, without its credentials."""
        if self.path is not None:
            return f"unix://{self.path}"
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_certs)
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class Connection(asyncio.Protocol):
    """One connection to Redis. `call` sends a command and returns the future of its reply; `send` sends one
    whose reply goes to `on_push` (pub/sub commands). On a connection with `on_push`, `call` only before the
    first SUBSCRIBE: after it, replies are told from pushes by order alone no more.

    A quiet connection (`go_quiet`: CLIENT REPLY OFF) gets no replies, and `post` sends a command on it
    without waiting for anything: for PUBLISHes, whose answer (how many subscribers got it) nobody reads.
    Why: each answer woke the sender's process to read it. Measured in the bench's Redis mode (issue 15,
    session 16, the two processes' CPU per delta, means of four runs with answers and three without): 661
    → 613 µs at N=10, where the processes are often idle; at N=50, 384 against 380, nothing through the
    noise (a busy loop reads the answers along with other work). A Redis that stops answering must still
    be noticed: a post made PROBE_EVERY seconds after the last probe adds one (CLIENT REPLY ON, PING,
    CLIENT REPLY OFF), whose two replies are held to `answer_within` as a call's is. A connection that
    breaks is noticed at once (`closed`), and `post` raises from then on.

    `closed` resolves (with the error, or None) when the connection is gone; `heard` is the loop time of the
    last bytes received."""

    PROBE_EVERY = 1.0  # seconds between liveness probes on a quiet connection that is posting
    MAX_BUFFERED = 16 * 1024 * 1024  # bytes unwritten: past this Redis is not reading, and post raises

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, answer_within: float, on_push: Push | None
    ) -> None:
        self._loop = loop
        self._answer_within = answer_within
        self._on_push = on_push
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        # (future of the reply, or None for a probe's; sent at), in order
        self._waiting: deque[tuple[asyncio.Future[Any] | None, float]] = deque()
        self._quiet = False
        self._probed_at = loop.time()
        self._out: list[bytes] = []
        # The write of `_out`, once scheduled; `_flush_waits`: for the end of the interval, not of this turn.
        # (uvloop's handles are not asyncio's classes, hence the flag.)
        self._flusher: asyncio.Handle | asyncio.TimerHandle | None = None
        self._flush_waits = False
        self._every = 0.0  # a quiet connection's least time between writes (`go_quiet`)
        self._written_at = -1e9
        self._deadline: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[BaseException | None] = loop.create_future()
        self.heard = loop.time()

    # --- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance check).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.heard = self._loop.time()
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._break(ConnectionError(f"Redis sent what is not RESP: {exc}"))
                return
            if reply is False:  # no whole reply buffered (RESP2 has no boolean replies)
                return
            if self._waiting:
                future, _ = self._waiting.popleft()
                if future is None:  # a probe's: only a refusal matters
                    if isinstance(reply, hiredis.ReplyError):
                        self._break(ConnectionError(f"Redis refused a probe: {reply}"))
                        return
                elif not future.done():
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
            elif self._on_push is not None:
                self._on_push(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        error = ConnectionError(f"the Redis connection was lost ({exc or 'closed by Redis'})")
        while self._waiting:
            future, _ = self._waiting.popleft()
            if future is not None and not future.done():
                future.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(exc or error)

    # --- commands --------------------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        return self._transport is None or self.closed.done()

    def call(self, *args: str | bytes | int) -> asyncio.Future[Any]:
        """Send a command; the future resolves to its reply (raises `hiredis.ReplyError` for an error reply,
        ConnectionError if the connection breaks or the reply is late)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.lost:
            future.set_exception(ConnectionError("the Redis connection is closed"))
            return future
        if self._quiet:
            future.set_exception(RuntimeError("call() on a quiet connection: nothing would answer"))
            return future
        self._expect(future, _pack(args))
        return future

    def go_quiet(self, *, write_every: float = 0.0) -> None:
        """CLIENT REPLY OFF: from now on this connection is for `post` (see the class docstring). With
        `write_every` (seconds), it writes at most that often: a post made sooner after the last write waits
        for the rest of the interval, and goes out with every other post made meanwhile; one made after a
        quiet spell, or posted `now`, goes out at the end of this turn of the loop, as without it."""
        self.send("CLIENT", "REPLY", "OFF")
        self._quiet = True
        self._every = write_every
        self._probed_at = self._loop.time()

    def post(self, *args: str | bytes | int, now: bool = False) -> None:
        """Send a command on a quiet connection, answered by nothing. Raises ConnectionError if the
        connection has closed (with why: `failure`) or Redis has stopped reading what is written.

        `now`: it goes out at the end of this turn of the loop even within `write_every` of the last write,
        and takes every post held until then with it, in order (for what someone is waiting for: a reply's
        first delta, a sync's answer; see `layers.RedisPubSubLayer`)."""
        if self.lost:
            raise ConnectionError(f"the Redis connection is closed ({self.failure or 'closed'})")
        assert self._transport is not None and self._quiet
        if self._transport.get_write_buffer_size() > self.MAX_BUFFERED:
            raise ConnectionError("Redis is not reading what this process writes; not sending more")
        self._write(_pack(args), now=now)
        at = self._loop.time()
        if at - self._probed_at >= self.PROBE_EVERY:
            self._probed_at = at
            self._expect(None, _pack(("CLIENT", "REPLY", "ON")))  # answered: OK
            self._expect(None, _pack(("PING",)))  # answered: PONG
            self._write(_pack(("CLIENT", "REPLY", "OFF")))  # not answered

    @property
    def failure(self) -> BaseException | None:
        """Why the connection closed, once it has."""
        return self.closed.result() if self.closed.done() else None

    def _expect(self, future: asyncio.Future[Any] | None, packed: bytes) -> None:
        self._write(packed)
        now = self._loop.time()
        self._waiting.append((future, now))
        if self._deadline is None:
            self._deadline = self._loop.call_at(now + self._answer_within, self._check_deadline)

    def send(self, *args: str | bytes | int) -> None:
        """Send a command whose reply, if any, goes to `on_push`. Nothing is sent if the connection is
        closed (its owner is told through `closed`)."""
        if not self.lost:
            self._write(_pack(args))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def keep_alive(self) -> None:
        """TCP keepalive on the socket: a peer that vanished is noticed by the kernel too."""
        sock = self._transport.get_extra_info("socket") if self._transport is not None else None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def _write(self, packed: bytes, *, now: bool = False) -> None:
        # The commands of one turn of the loop go out in one write (the deltas of many replies meet here);
        # on a quiet connection with `write_every`, those of every turn until the interval has passed,
        # unless one is wanted `now`: then the write is brought forward to the end of this turn.
        if self._flusher is None or (now and self._flush_waits):
            if self._flusher is not None:
                self._flusher.cancel()
            wait = 0.0 if now else self._written_at + self._every - self._loop.time()
            self._flush_waits = wait > 0
            self._flusher = (
                self._loop.call_later(wait, self._flush) if wait > 0 else self._loop.call_soon(self._flush)
            )
        self._out.append(packed)

    def _flush(self) -> None:
        self._flusher = None
        out, self._out = self._out, []
        if self._transport is not None and out:
            self._transport.write(b"".join(out))
            self._written_at = self._loop.time()

    def _check_deadline(self) -> None:
        self._deadline = None
        if not self._waiting:
            return
        due = self._waiting[0][1] + self._answer_within
        if self._loop.time() >= due:
            self._break(TimeoutError(f"Redis did not answer within {self._answer_within:g}s"))
        else:
            self._deadline = self._loop.call_at(due, self._check_deadline)

    def _break(self, error: Exception) -> None:
        while self._waiting:
            future, _ = self._waiting.popleft()
            if future is not None and not future.done():
                future.set_exception(ConnectionError(str(error)))
        if not self.closed.done():
            self.closed.set_result(error)
        if self._transport is not None:
            self._transport.abort()


async def connect(address: Address, *, on_push: Push | None = None) -> Connection:
    """A connection to `address`, signed in. Raises (ConnectionError, OSError, TimeoutError) if Redis
    cannot be reached within its connect timeout or refuses the credentials."""
    loop = asyncio.get_running_loop()

    def protocol() -> Connection:
        return Connection(loop, answer_within=address.answer_within, on_push=on_push)

    async with asyncio.timeout(address.connect_timeout):
        if address.path is not None:
            _, connection = await loop.create_unix_connection(protocol, address.path)
        else:
            _, connection = await loop.create_connection(
                protocol,
                address.host,
                address.port,
                ssl=address.tls_context(),
            )
    if address.keepalive:
        connection.keep_alive()
    if address.password is not None:
        credentials = (address.username, address.password) if address.username else (address.password,)
        try:
            async with asyncio.timeout(address.connect_timeout):
                await connection.call("AUTH", *credentials)
        except BaseException:
            connection.close()
            raise
    return connection
