from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop
from django.contrib.auth.models import User

from tests.support.asgi_client import AsgiClient, session_cookies
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.oidc import CLIENT_ID, CLIENT_SECRET, OIDCProvider

IN_CI = os.environ.get("CI") == "true"
SERVICE_MARKERS = ("postgres", "redis", "browser")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI, a test that needs PostgreSQL, Redis or Chromium may not skip: its skip is a failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped and any(m in item.keywords for m in SERVICE_MARKERS):
        report.outcome = "failed"
        report.longrepr = f"CI may not skip a test that needs a real service: {report.longrepr}"


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Async tests run on asyncio's own loop; those marked `uvloop_too` also on uvloop's, which the server
    runs on (chatsite/serve.py): code that touches transports or the loop's internals must work on both."""
    if item.get_closest_marker("uvloop_too") is None:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.hookimpl(trylast=True)  # after pytest-django's own reordering
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Browser tests last: Playwright's sync API keeps an event loop running in the main thread for the
    # session, and asyncio tests cannot start their own loop while it lives.
    items.sort(key=lambda item: "browser" in item.keywords)
    _skip_browser_tests_without_chromium(items)


def _skip_browser_tests_without_chromium(items: list[pytest.Item]) -> None:
    """Skip browser tests on a machine without Chromium; in CI such a skip becomes a failure."""
    if shutil.which("chromium") or os.path.exists("/usr/bin/chromium"):
        return
    skip = pytest.mark.skip(reason="Chromium not installed (apt-get install -y chromium)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fast_password_hasher(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def attachments_dir(settings: Any, tmp_path: Any) -> Any:
    """Attachment files of each test go to its own directory (the local storage backend), never data/."""
    location = tmp_path / "attachments"
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location), "base_url": None},
        },
    }
    return location


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> None:
    """Rate-limit counters live in process memory across tests; each test starts with none."""
    from chat import throttling

    throttling.reset()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(fake_server: FakeAnthropic, settings: Any) -> FakeAnthropic:
    """The fake Anthropic API as the model provider, reached by the real SDK over loopback HTTP."""
    fake_server.reset()
    settings.CHAT_PROVIDER = "anthropic"
    settings.ANTHROPIC_API_KEY = "test-key"
    settings.ANTHROPIC_BASE_URL = fake_server.url
    settings.CHAT_UPSTREAM_MAX_RETRIES = 0
    settings.CHAT_UPSTREAM_READ_TIMEOUT = 5.0
    settings.CHAT_SAVE_INTERVAL = 0.1
    return fake_server


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OIDCProvider]:
    """The real OpenID Connect provider process (tests/support/oidc_provider.py) on a loopback port."""
    provider = OIDCProvider(redirect_uris=["http://testserver/oidc/callback/"]).start()
    yield provider
    provider.stop()


@pytest.fixture
def sso(oidc_provider: OIDCProvider, settings: Any, db: None) -> OIDCProvider:
    """This site configured for SSO with the test provider: example.com addresses only, the
    `chat-admins` group makes staff, open signup (tests narrow it)."""
    from accounts.oidc import forget_provider_metadata

    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_PROVIDER_NAME = "Test IdP"
    settings.OIDC_ALLOWED_DOMAINS = ["example.com"]
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_STAFF_GROUP = "chat-admins"
    settings.SIGNUP = "open"
    settings.PASSWORD_LOGIN = True
    forget_provider_metadata()
    return oidc_provider


@pytest.fixture
def make_user(db: None) -> Any:
    def make(username: str = "alice") -> User:
        return User.objects.create_user(username=username, password="correct horse battery staple")

    return make


@pytest.fixture
def asgi_app() -> Any:
    from chatsite.asgi import application

    return application


@pytest.fixture
def alice(make_user: Any) -> User:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Any) -> User:
    return make_user("bob")


@pytest.fixture
def alice_client(asgi_app: Any, alice: User) -> AsgiClient:
    return AsgiClient(asgi_app, session_cookies(alice))


@pytest.fixture
def bob_client(asgi_app: Any, bob: User) -> AsgiClient:
    return AsgiClient(asgi_app, session_cookies(bob))


@pytest.fixture
async def background() -> Any:
    """Generations run as tasks on the test's event loop; finish or cancel them before the loop closes."""
    import asyncio

    from chat.streaming import lifecycle

    yield lifecycle
    tasks = [t for t in lifecycle.running_tasks() if not t.done()]
    for task in tasks:
        if task.get_name() == "reaper":
            task.cancel()
    pending = [t for t in tasks if t.get_name() != "reaper"]
    if pending:
        _, still = await asyncio.wait(pending, timeout=10)
        for task in still:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lifecycle._reaper = None
