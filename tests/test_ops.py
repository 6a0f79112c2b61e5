"""The operations endpoints: /healthz and /readyz for probes (no login, no session, no HTTPS redirect; readyz
names the dependency that fails), and /metrics for staff, a token or allowed addresses only, counting what
the engine did — through the real ASGI handler, the fake upstream, and a live daphne for a dead database."""

from __future__ import annotations

import asyncio
import json
import threading
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.error import HTTPError as UrlHTTPError
from urllib.request import urlopen

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from prometheus_client.parser import text_string_to_metric_families

from chat.streaming import admission
from tests.support.asgi_client import AsgiClient, session_cookies, stream_path
from tests.support.cluster import RedisServer
from tests.support.fake_anthropic import End, FakeAnthropic, HTTPError, Text, Wait
from tests.support.live_server import DaphneProcess, free_port
from tests.support.streams import follow
from tests.support.waiting import until

pytestmark = [pytest.mark.django_db(transaction=True)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: AsgiClient, token: str) -> Samples:
    response = await client.request("GET", "/metrics", headers={"authorization": f"Bearer {token}"})
    assert response.status == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


async def test_healthz_and_readyz_answer(asgi_app: Any, background: Any) -> None:
    probe = AsgiClient(asgi_app, {})
    probe.cookies.clear()  # a probe sends no cookies at all
    health = await probe.request("GET", "/healthz", htmx=False)
    assert (health.status, health.text) == (200, "ok")
    ready = await probe.request("GET", "/readyz", htmx=False)
    assert ready.status == 200, ready.text
    assert json.loads(ready.text) == {
        "ready": True,
        "checks": {"database": "ok", "channel_layer": "ok"},
        "draining": False,
        "failing": [],
    }
    for response in (health, ready):
        assert "set-cookie" not in response.headers
    assert await Session.objects.acount() == 0

    # While the process drains before exiting, it is alive but not ready.
    background._draining = True
    try:
        health = await probe.request("GET", "/healthz", htmx=False)
        ready = await probe.request("GET", "/readyz", htmx=False)
    finally:
        background._draining = False
    assert health.status == 200
    assert ready.status == 503 and json.loads(ready.text)["failing"] == ["draining"]


def test_readyz_says_which_dependency_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    """A live daphne whose DATABASE_URL points at a port where nothing listens: alive, not ready, and the
    answer names the database (and only it). With production's HTTPS redirect on, the probes are exempt."""
    import os

    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "CHAT_", "DATABASE_", "REDIS_"))
        },
        "DEBUG": "True",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/nowhere",
        # Without the pool the refused connection fails at once (with it, the check times out at 1 s,
        # and the process takes seconds longer to stop).
        "DATABASE_POOL": "False",
        "READYZ_TIMEOUT": "1",
        "SECURE_SSL_REDIRECT": "True",
        "PYTHONUNBUFFERED": "1",
    }
    proc = DaphneProcess(env, tmp_path, "no-database", ready_path="/healthz").start()
    try:
        connection = HTTPConnection("127.0.0.1", proc.port, timeout=10)
        connection.request("GET", "/accounts/login/")
        assert connection.getresponse().status == 301  # everything else goes to HTTPS
        connection.close()
        with urlopen(proc.url + "/healthz", timeout=10) as response:
            assert (response.status, response.read()) == (200, b"ok")
        with pytest.raises(UrlHTTPError) as refused:
            urlopen(proc.url + "/readyz", timeout=10)
        assert refused.value.code == 503
        body = json.loads(refused.value.read())
        assert body["failing"] == ["database"], body
        assert body["checks"] == {"database": "error: OperationalError", "channel_layer": "ok"}
        assert "127.0.0.1" not in json.dumps(body)  # a driver's message stays in the logs
    finally:
        proc.stop()


async def test_metrics_are_for_staff_a_token_or_allowed_addresses_only(
    asgi_app: Any, alice_client: AsgiClient, settings: Any
) -> None:
    staff = await sync_to_async(User.objects.create_user)("ops", password="x", is_staff=True)
    staff_client = AsgiClient(asgi_app, await sync_to_async(session_cookies)(staff))
    anonymous = AsgiClient(asgi_app)
    settings.METRICS_TOKEN = "s3cret-token"
    settings.METRICS_ALLOW_IPS = ["10.1.0.0/16", "192.0.2.7"]

    assert (await anonymous.request("GET", "/metrics")).status == 404
    assert (await alice_client.request("GET", "/metrics")).status == 404  # signed in, not staff
    response = await staff_client.request("GET", "/metrics")
    assert response.status == 200 and "chat_active_replies" in response.text

    for header, status in [
        ("Bearer s3cret-token", 200),
        ("bearer s3cret-token", 200),
        ("Bearer s3cret-tokem", 404),
        ("Bearer ", 404),
        ("Basic s3cret-token", 404),
    ]:
        response = await anonymous.request("GET", "/metrics", headers={"authorization": header})
        assert response.status == status, header
        assert "set-cookie" not in response.headers
    settings.METRICS_TOKEN = ""  # off: no token opens it, not even an empty one
    assert (await anonymous.request("GET", "/metrics", headers={"authorization": "Bearer "})).status == 404

    for address, status in [("10.1.200.3", 200), ("192.0.2.7", 200), ("10.2.0.1", 404), ("192.0.2.8", 404)]:
        response = await AsgiClient(asgi_app, client_ip=address).request("GET", "/metrics")
        assert response.status == status, address


async def test_metrics_count_what_happened(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.METRICS_TOKEN = "t"
    settings.CHAT_MAX_CONCURRENT_PER_USER = 10
    before = await scrape(alice_client, "t")

    # A completed reply, followed from its first delta: the first one waits at a gate, so the stream is open
    # before the upstream sends the rest.
    gate = threading.Event()
    upstream.enqueue(Text("Hel"), Wait(gate, timeout=30), Text("lo"), End())
    response = await alice_client.request("POST", "/c/start/", data={"text": "Count this"})
    assert response.status == 200
    stream = await alice_client.open_stream(stream_path(response.text))
    try:
        assert (await stream.next_event()).data == "Hel"
        during = await scrape(alice_client, "t")
        assert value(during, "chat_active_replies") == value(before, "chat_active_replies") + 1
        assert value(during, "chat_active_subscribers") == value(before, "chat_active_subscribers") + 1
        # The flusher saves the changed text while the reply waits: one batched save observed.
        flushes = value(before, "chat_flush_seconds_count")
        await until(lambda: _flushes() > flushes, "the flusher saved the partial reply")
    finally:
        gate.set()
    await stream.events_until("done")
    await stream.drain()
    await until(lambda: admission.active() == 0, "the reply's task ended")
    after = await scrape(alice_client, "t")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("chat_replies_total", status="complete") == 1
    assert grew("chat_upstream_deltas_total") == 2
    assert grew("chat_deltas_sent_total", kind="text") >= 2  # "Hel", "lo" (a final catch-up may add one)
    assert grew("chat_delta_chars_sent_total", kind="text") == len("Hello")  # no character sent twice
    assert grew("chat_first_token_seconds_count", part="upstream") == 1
    assert grew("chat_first_token_seconds_count", part="added") == 1
    assert value(after, "chat_active_subscribers") == value(before, "chat_active_subscribers")

    # An upstream failure, counted by kind, and the reply's final status.
    upstream.enqueue(HTTPError(529, "overloaded_error", "Overloaded"))
    response = await alice_client.request("POST", "/c/start/", data={"text": "Fail"})
    await follow(alice_client, stream_path(response.text))
    await until(lambda: admission.active() == 0, "the failed reply's task ended")
    failed = await scrape(alice_client, "t")
    assert value(failed, "chat_upstream_errors_total", kind="overloaded") == (
        value(after, "chat_upstream_errors_total", kind="overloaded") + 1
    )
    assert (
        value(failed, "chat_replies_total", status="error")
        == value(after, "chat_replies_total", status="error") + 1
    )

    # An admission refusal.
    settings.CHAT_MAX_ACTIVE_REPLIES = 1
    gate = threading.Event()
    try:
        upstream.enqueue(Wait(gate, timeout=30), Text("x"), End())
        held = await alice_client.request("POST", "/c/start/", data={"text": "Held"})
        assert held.status == 200
        assert (await alice_client.request("POST", "/c/start/", data={"text": "Refused"})).status == 503
        refused = await scrape(alice_client, "t")
    finally:
        gate.set()
    await follow(alice_client, stream_path(held.text))
    assert (
        value(refused, "chat_admission_refusals_total") == value(failed, "chat_admission_refusals_total") + 1
    )
    assert value(refused, "chat_max_active_replies") == 1

    # A start waiting for one of CHAT_MAX_CONCURRENT_STARTS places (the test holds the one place).
    settings.CHAT_MAX_ACTIVE_REPLIES = 100
    settings.CHAT_MAX_CONCURRENT_STARTS = 1
    upstream.enqueue(Text("Waited."), End())
    async with admission.starting():
        waiting = asyncio.create_task(alice_client.request("POST", "/c/start/", data={"text": "Wait"}))
        await until(lambda: admission.starts_waiting() == 1, "the start waits for the place")
        assert value(await scrape(alice_client, "t"), "chat_starts_waiting") == 1
    response = await waiting
    assert response.status == 200
    await follow(alice_client, stream_path(response.text))
    assert value(await scrape(alice_client, "t"), "chat_starts_waiting") == 0


def _flushes() -> float:
    from chat.streaming.metrics import FLUSH

    samples = [sample for family in FLUSH.collect() for sample in family.samples]
    return next(sample.value for sample in samples if sample.name == "chat_flush_seconds_count")


@pytest.mark.redis
async def test_readyz_names_the_channel_layer_when_redis_is_down(
    asgi_app: Any, tmp_path: Path, settings: Any, background: Any
) -> None:
    """On Redis, the round trip goes through the server (beside a receive already blocked there, as a
    reply's control loop is); with Redis gone, readyz says so and names only the channel layer."""
    from channels.layers import channel_layers

    server = RedisServer(tmp_path).start()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.streaming.layers.RedisPubSubLayer",
            "CONFIG": {"hosts": [{"address": server.url, "socket_timeout": 15, "socket_connect_timeout": 1}]},
        }
    }
    probe = AsgiClient(asgi_app)
    layer = channel_layers["default"]
    blocked = asyncio.create_task(layer.receive(await layer.new_channel()))  # holds the receive lock
    try:
        ready = await probe.request("GET", "/readyz", htmx=False)
        assert ready.status == 200, ready.text
        server.kill()
        down = await probe.request("GET", "/readyz", htmx=False)
        assert down.status == 503
        body = json.loads(down.text)
        assert body["failing"] == ["channel_layer"] and body["checks"]["database"] == "ok"
        assert body["checks"]["channel_layer"].startswith(("error: ", "timeout after"))
    finally:
        blocked.cancel()
        await asyncio.gather(blocked, return_exceptions=True)
        server.stop()
