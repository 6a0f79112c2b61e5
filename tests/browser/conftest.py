"""Browser tests: real Chromium (Playwright) against a live daphne server, whose upstream is the fake
Anthropic API running in this test process. One server and one browser per session; a fresh context
(and a fresh user) per test."""

from __future__ import annotations

import os
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Playwright, expect, sync_playwright

from tests.support.fake_anthropic import FakeAnthropic

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple 42"
TIMEOUT_MS = 15_000
HEARTBEAT_SECONDS = 1  # short, so pages notice a stalled stream within a test's patience

expect.set_options(timeout=TIMEOUT_MS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    log_path: Path
    pid: int = 0

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the live server's database directly (it is a separate process with its own SQLite file)."""
        with sqlite3.connect(self.data_dir / "db.sqlite3", timeout=10) as db:
            return list(db.execute(sql, params).fetchall())

    def message(self, pk: int) -> tuple[str, str]:
        rows = self.rows("SELECT content, status FROM chat_message WHERE id = ?", pk)
        assert rows, f"no message {pk}"
        return str(rows[0][0]), str(rows[0][1])

    def wait_status(self, pk: int, status: str, timeout: float = 15.0) -> str:
        """The reply's content once the database shows `status` (polls: the server writes it on its own)."""
        deadline = time.monotonic() + timeout
        while True:
            content, current = self.message(pk)
            if current == status:
                return content
            if time.monotonic() > deadline:
                raise AssertionError(f"message {pk} is {current!r}, not {status!r}")
            time.sleep(0.05)

    def wait_content(self, pk: int, content: str, timeout: float = 15.0) -> str:
        """The reply's content once the database holds `content` (the server saves on a throttle)."""
        deadline = time.monotonic() + timeout
        while True:
            current, _ = self.message(pk)
            if current == content:
                return current
            if time.monotonic() > deadline:
                raise AssertionError(f"message {pk} holds {current!r}, not {content!r}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def chat_server(fake_upstream: FakeAnthropic) -> Iterator[LiveServer]:
    data_dir = Path(tempfile.mkdtemp(prefix="chatsite-browser-"))
    port = _free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
        "REDIS_URL": "",
        "DEBUG": "True",
        "SECRET_KEY": "browser-tests-" + secrets.token_hex(16),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CHAT_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "test",
        "ANTHROPIC_BASE_URL": fake_upstream.url,
        "CHAT_UPSTREAM_MAX_RETRIES": "0",
        "CHAT_UPSTREAM_READ_TIMEOUT": "30",
        "CHAT_SAVE_INTERVAL": "0.1",
        "CHAT_MAX_CONCURRENT_PER_USER": "10",
        "CHAT_KEEPALIVE_SECONDS": str(HEARTBEAT_SECONDS),
        "SIGNUPS_PER_IP_PER_HOUR": "100000",  # every test signs a fresh user up from 127.0.0.1
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env["DJANGO_SETTINGS_MODULE"] = "tests.browser.live_settings"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    log_path = data_dir / "daphne.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            # daphne on uvloop, as scripts/run starts it
            [
                str(VENV_BIN / "python"),
                "-m",
                "chatsite.serve",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "chatsite.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", data_dir, log_path, proc.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daphne exited ({proc.returncode}):\n{server.log()}")
            try:
                with urllib.request.urlopen(server.url + "/accounts/login/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not come up:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def upstream(fake_upstream: FakeAnthropic) -> FakeAnthropic:
    """The session's fake Anthropic API, with a clean queue for this test."""
    fake_upstream.reset()
    return fake_upstream


@pytest.fixture
def new_context(browser: Browser, chat_server: LiveServer) -> Iterator[Any]:
    """A factory of browser contexts (closed at the end of the test); pass Playwright context options."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        options.setdefault("base_url", chat_server.url)
        options.setdefault("viewport", {"width": 1280, "height": 800})
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def username(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:20].strip('_')}-{secrets.token_hex(3)}"


def sign_up(page: Page, name: str) -> None:
    """Create an account through the real sign-up form; it logs the new user in."""
    page.goto("/accounts/signup/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("#composer-text")).to_be_visible()


@pytest.fixture
def context(new_context: Any) -> BrowserContext:
    return new_context()


@pytest.fixture
def page(context: BrowserContext, username: str, upstream: FakeAnthropic) -> Page:
    """A signed-in page on the (empty) home screen, for a user of this test only."""
    page = context.new_page()
    sign_up(page, username)
    return page


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def wait_ready(page: Page) -> None:
    """The page's deferred scripts have run (htmx is processing, app.js handles the keys)."""
    page.wait_for_function("() => document.readyState === 'complete' && !!window.htmx")


def send(page: Page, text: str) -> None:
    """Type into the composer and press Enter (the way a person sends)."""
    wait_ready(page)
    box = page.locator("#composer-text")
    expect(box).to_be_editable()
    box.fill(text)
    box.press("Enter")


def last_reply(page: Page) -> Locator:
    return page.locator("#messages > article.msg-assistant").last


def reply_pk(page: Page) -> int:
    """The database id of the latest reply on the page (its article is `#msg-<pk>`)."""
    article = last_reply(page)
    expect(article).to_have_attribute("id", re.compile(r"^msg-\d+$"))
    return int(str(article.get_attribute("id")).removeprefix("msg-"))


def finished_reply(page: Page) -> Locator:
    """The latest reply once the final rendering has replaced the streamed text."""
    article = last_reply(page)
    expect(article).to_have_attribute("aria-busy", "false")
    return article
