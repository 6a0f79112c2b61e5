"""Operations endpoints, for process managers, load balancers and a Prometheus scraper (README, "Operations:
capacity, metrics and health"):

- `/healthz`: the process is alive and its event loop answers (200 "ok"); touches nothing else;
- `/readyz`: it can serve — the database answers `SELECT 1` and a message goes round the channel layer,
  each within READYZ_TIMEOUT seconds, and it is not draining. JSON naming each check; 503 names the
  failing ones, so a balancer stops sending requests here and an operator sees why;
- `/metrics`: this process's numbers (chat/streaming/metrics.py) in the Prometheus text format, for staff,
  a `METRICS_TOKEN` bearer, or a client address in `METRICS_ALLOW_IPS`; anyone else gets a 404.

All three are async (no request thread), exempt from the HTTPS redirect (a probe or scraper reaches each
daphne process directly, over plain HTTP), and need no login. `/healthz` and `/readyz` never touch the
session, so probes create no session rows and get no cookies."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import threading
import time
from functools import lru_cache
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chat.streaming import METRICS_REGISTRY, is_draining
from chat.throttling import client_ip

# The database check in flight, shared by every probe that comes meanwhile (single flight).
_database_check: asyncio.Future[None] | None = None


@require_GET
async def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain; charset=utf-8")


@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    timeout = settings.READYZ_TIMEOUT
    database, channel_layer = await asyncio.gather(
        _check(_database, timeout), _check(_channel_layer_round_trip, timeout)
    )
    checks = {"database": database, "channel_layer": channel_layer}
    failing = [name for name, result in checks.items() if result != "ok"]
    draining = is_draining()
    if draining:
        failing.append("draining")
    body: dict[str, Any] = {"ready": not failing, "checks": checks, "draining": draining, "failing": failing}
    return JsonResponse(body, status=503 if failing else 200)


async def _check(probe: Any, seconds: float) -> str:
    """'ok', or what went wrong: the exception's class only (this answer is public; a driver's message may
    name hosts and users)."""
    try:
        async with asyncio.timeout(seconds):
            await probe()
    except TimeoutError:
        return f"timeout after {seconds:g}s"
    except Exception as error:
        return f"error: {type(error).__name__}"
    return "ok"


def _select_one() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # a fresh connection each time: readiness is "can connect", not "was connected"


async def _database() -> None:
    """`SELECT 1` on a fresh connection, in its own daemon thread: a database that hangs holds that thread,
    never a request's or the engine's (with SQLite the engine has one database thread), and never delays
    the process's exit. One check at a time: probes arriving while one hangs wait for it (and time out),
    so a hung database costs one thread, not one per probe."""
    global _database_check
    loop = asyncio.get_running_loop()
    check = _database_check
    if check is None or check.done() or check.get_loop() is not loop:
        check = _database_check = loop.create_future()

        def run() -> None:
            try:
                _select_one()
            except BaseException as error:
                loop.call_soon_threadsafe(_settle, check, error)
            else:
                loop.call_soon_threadsafe(_settle, check, None)

        threading.Thread(target=run, name="readyz-db", daemon=True).start()
    await asyncio.shield(check)


def _settle(check: asyncio.Future[None], error: BaseException | None) -> None:
    if check.done():
        return
    if error is None:
        check.set_result(None)
    else:
        check.set_exception(error)
        check.exception()  # retrieved: probes that timed out meanwhile no longer await it


async def _channel_layer_round_trip() -> None:
    layer = get_channel_layer()
    if layer is None:  # pragma: no cover - settings always define one
        raise RuntimeError("no channel layer")
    channel = await layer.new_channel()
    sent = {"type": "readyz.ping", "at": time.monotonic()}
    await layer.send(channel, sent)
    received = await layer.receive(channel)
    if received != sent:
        raise RuntimeError("the channel layer returned another message")


@require_GET
async def metrics(request: HttpRequest) -> HttpResponse:
    if not await _may_read_metrics(request):
        raise Http404
    return HttpResponse(generate_latest(METRICS_REGISTRY), content_type=CONTENT_TYPE_LATEST)


async def _may_read_metrics(request: HttpRequest) -> bool:
    """A valid bearer token or an allowed address first (they need no session), then a staff user."""
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer":
        if secrets.compare_digest(given.strip().encode(), token.encode()):
            return True
    address = client_ip(request)
    if address is not None and _address_allowed(address, tuple(settings.METRICS_ALLOW_IPS)):
        return True
    user = await request.auser()
    return bool(user.is_active and user.is_staff)


@lru_cache(maxsize=64)
def _networks(allowed: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in allowed if entry.strip())


def _address_allowed(address: str, allowed: tuple[str, ...]) -> bool:
    """`address` is one of `allowed` (addresses or networks such as 10.0.0.0/8)."""
    if not allowed:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(allowed))
