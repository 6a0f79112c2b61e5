"""Real services for multi-process tests: a fresh PostgreSQL database, and a private redis-server that a test
may kill and start again on the same port."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.live_server import free_port


def services_or_skip(pg_url: str, redis_url: str | None = None) -> None:
    """Skip (a failure under CI=true) when PostgreSQL or Redis does not answer."""
    try:
        psycopg.connect(pg_url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {pg_url}: {exc}")
    if redis_url is not None:
        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            pytest.skip(f"Redis not reachable at {redis_url}: {exc}")


@contextlib.contextmanager
def fresh_database(pg_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database beside `pg_url`'s; its URL; dropped afterwards."""
    name = f"chatsite_mp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def db_row(url: str, reply_id: int) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT content, status, error_message FROM chat_message WHERE id = %s", (reply_id,)
        ).fetchone()
    assert row is not None
    return {"content": row[0], "status": row[1], "error_message": row[2]}


@dataclass
class RedisServer:
    """A private `redis-server` on a free loopback port, with nothing saved to disk: killed and started
    again, it comes back empty, as a restarted Redis does (groups and queued messages gone). With
    `password`, clients must sign in; with `unix_socket`, it listens there instead of on TCP; with
    `tls` (a certificate and its key, self-signed: it is also the CA), it speaks TLS only."""

    log_dir: Path
    port: int = field(default_factory=free_port)
    password: str | None = None
    unix_socket: Path | None = None
    tls: tuple[Path, Path] | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}"
        credentials = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{credentials}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server not installed (apt-get install -y redis-server)")
        listen = ["--port", str(self.port), "--bind", "127.0.0.1"]
        if self.unix_socket is not None:
            listen = ["--port", "0", "--unixsocket", str(self.unix_socket)]
        if self.tls is not None:
            cert, key = (str(path) for path in self.tls)
            listen = ["--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"]
            listen += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert]
            listen += ["--tls-auth-clients", "no"]
        if self.password is not None:
            listen += ["--requirepass", self.password]
        log = open(self.log_dir / f"redis-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [binary, *listen, "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.url} did not start") from None
                time.sleep(0.05)
            finally:
                client.close()

    def client(self) -> redis.Redis:
        """A redis-py client signed in to this server (to set it up or look inside)."""
        if self.unix_socket is not None:
            return redis.Redis(unix_socket_path=str(self.unix_socket), socket_connect_timeout=1)
        if self.tls is not None:
            return redis.Redis(
                port=self.port,
                password=self.password,
                socket_connect_timeout=1,
                ssl=True,
                ssl_ca_certs=str(self.tls[0]),
            )
        return redis.Redis(port=self.port, password=self.password, socket_connect_timeout=1)

    def kill(self) -> None:
        """SIGKILL: Redis vanishes mid-command, as in a crash; its connections are reset."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisMonitor:
    """The commands a Redis server runs while this is open, as its MONITOR command reports them (redis-py's
    `Monitor`, read on a thread): `published(channel)` counts the PUBLISHes to one channel so far."""

    def __init__(self, server: RedisServer) -> None:
        self._client = server.client()
        self._monitor = self._client.monitor()
        self._commands: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="redis-monitor", daemon=True)

    def __enter__(self) -> RedisMonitor:
        self._monitor.__enter__()  # MONITOR, and its OK read: every command from here on is seen
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._monitor.__exit__()  # disconnects: the reading thread's next read fails and it ends
        self._thread.join(5)
        self._client.close()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                command = self._monitor.next_command()
                with self._lock:
                    self._commands.append(command["command"])

    def published(self, channel: str) -> int:
        """The PUBLISHes to `channel` that Redis ran before this call (waiting until the monitor has read
        them)."""
        marker = f"monitor-mark-{uuid.uuid4().hex}"
        self._client.echo(marker)  # Redis runs commands in order: once this is seen, all before it are
        deadline = time.monotonic() + 10
        while True:
            with self._lock:
                if f"ECHO {marker}" in self._commands:
                    return sum(1 for command in self._commands if command.startswith(f"PUBLISH {channel} "))
            if time.monotonic() > deadline:
                raise AssertionError("Redis's MONITOR did not report a command within 10 s")
            time.sleep(0.01)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, valid for a day, and its key (PEM files in `directory`);
    it is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatsite test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
