"""Accounts in a real browser against live daphne servers configured the way a team would: sign-in
through the local OpenID Connect provider's own login page, an invite link that works once and then
refuses, and a closed signup that hides the signup page."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import TIMEOUT_MS, shot
from tests.support.oidc import CLIENT_ID, CLIENT_SECRET, PASSWORD, OIDCProvider, free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def live_site(**settings: str) -> Iterator[str]:
    """A daphne process on its own SQLite database with these settings; yields its URL."""
    data_dir = Path(tempfile.mkdtemp(prefix="chatsite-accounts-"))
    port = int(settings.pop("PORT"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.browser.live_settings",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
        "REDIS_URL": "",
        "DEBUG": "True",
        "SECRET_KEY": "browser-tests-" + secrets.token_hex(16),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CHAT_PROVIDER": "demo",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    # The team's first account, made the way the README says: createsuperuser.
    subprocess.run(
        [*manage, "createsuperuser", "--noinput", "--username", "root", "--email", "dana@example.com"],
        cwd=ROOT,
        env={**env, "DJANGO_SUPERUSER_PASSWORD": "root password 1"},
        check=True,
        timeout=120,
    )
    log_path = data_dir / "daphne.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatsite.serve",  # daphne on uvloop, as scripts/run starts it
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
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daphne exited: {log_path.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(url + "/accounts/login/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
            if time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not come up: {log_path.read_text(errors='replace')}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def team_site(oidc_provider: OIDCProvider) -> Iterator[str]:
    """SSO with the test provider, invite-only signup, example.com addresses, `chat-admins` are staff."""
    port = free_port()
    oidc_provider.add_redirect_uri(f"http://127.0.0.1:{port}/oidc/callback/")
    with live_site(
        PORT=str(port),
        SIGNUP="invite",
        OIDC_ISSUER=oidc_provider.issuer,
        OIDC_CLIENT_ID=CLIENT_ID,
        OIDC_CLIENT_SECRET=CLIENT_SECRET,
        OIDC_PROVIDER_NAME="Test IdP",
        OIDC_ALLOWED_DOMAINS="example.com",
        OIDC_STAFF_GROUP="chat-admins",
    ) as url:
        yield url


@pytest.fixture
def contexts(browser: Browser) -> Iterator[Any]:
    made: list[BrowserContext] = []

    def make(base_url: str) -> BrowserContext:
        context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def sign_in_at_provider(page: Page, username: str) -> None:
    """On the provider's own login page (another origin), as a person would."""
    expect(page.get_by_role("heading", name="Test Identity Provider")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_through_the_providers_login_page(
    team_site: str, oidc_provider: OIDCProvider, contexts: Any
) -> None:
    oidc_provider.add_user(
        "dana", email="dana@example.com", email_verified=True, given_name="Dana", groups=["chat-admins"]
    )
    page = contexts(team_site).new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.get_by_role("link", name="Sign up")).to_have_count(0)  # invite-only
    shot(page, "login-with-sso")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    expect(page).to_have_url(re.compile("^" + re.escape(oidc_provider.issuer) + "/authorize"))
    shot(page, "sso-provider-login")
    sign_in_at_provider(page, "dana")
    expect(page).to_have_url(team_site + "/")
    expect(page.locator("#composer-text")).to_be_visible()
    # createsuperuser's account was linked (verified address), not a second one made; staff reaches admin.
    page.goto("/admin/auth/user/")
    expect(page.get_by_text("root", exact=True)).to_be_visible()
    expect(page.get_by_text(f"{oidc_provider.issuer} · ")).to_be_visible()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)

    # A second sign-in, in another browser, reuses the account.
    again = contexts(team_site).new_page()
    again.goto("/accounts/login/")
    again.get_by_role("link", name="Sign in with Test IdP").click()
    sign_in_at_provider(again, "dana")
    expect(again.locator("#composer-text")).to_be_visible()


def test_an_invite_link_works_once_and_then_refuses(
    team_site: str, oidc_provider: OIDCProvider, contexts: Any
) -> None:
    oidc_provider.add_user("kim", email="kim@example.com", email_verified=True)
    oidc_provider.add_user("lou", email="lou@example.com", email_verified=True)
    # Staff make the invite in the admin (signed in with the superuser's password here).
    staff = contexts(team_site).new_page()
    staff.goto("/admin/accounts/invite/add/")
    staff.get_by_label("Username").fill("root")
    staff.get_by_label("Password").fill("root password 1")
    staff.get_by_role("button", name="Log in").click()
    staff.get_by_label("Note").fill("for Kim")
    staff.get_by_role("button", name="Save", exact=True).click()
    message = staff.locator(".messagelist").get_by_text("Invite link")
    expect(message).to_be_visible()
    link = re.search(r"http://127\.0\.0\.1:\d+/accounts/invite/[\w-]+/", message.inner_text())
    assert link, message.inner_text()
    shot(staff, "invite-created")

    kim = contexts(team_site).new_page()
    kim.goto(link.group(0))
    expect(kim.get_by_role("heading", name="You're invited to chatsite")).to_be_visible()
    kim.get_by_role("link", name="Join with Test IdP").click()
    sign_in_at_provider(kim, "kim")
    expect(kim.locator("#composer-text")).to_be_visible()

    # The same link, for someone else: refused, with a page that says why.
    lou = contexts(team_site).new_page()
    lou.goto(link.group(0))
    expect(lou.get_by_role("heading", name="This invite link has already been used")).to_be_visible()
    expect(lou.get_by_role("link", name="Join with Test IdP")).to_have_count(0)
    shot(lou, "invite-used")
    # And signing in at the provider without an invite makes no account either.
    lou.goto("/accounts/login/")
    lou.get_by_role("link", name="Sign in with Test IdP").click()
    sign_in_at_provider(lou, "lou")
    expect(lou.get_by_text("This site is invite-only")).to_be_visible()
    shot(lou, "sso-refused-invite-only")
    staff.goto("/admin/auth/user/")
    expect(staff.get_by_role("link", name="kim", exact=True)).to_be_visible()
    expect(staff.get_by_role("link", name="lou", exact=True)).to_have_count(0)


def test_closed_signup_hides_the_signup_page(contexts: Any) -> None:
    with live_site(PORT=str(free_port()), SIGNUP="closed") as url:
        page = contexts(url).new_page()
        page.goto("/accounts/login/")
        expect(page.get_by_role("heading", name="Log in to chatsite")).to_be_visible()
        expect(page.get_by_role("link", name="Sign up")).to_have_count(0)
        expect(page.get_by_text("No account yet")).to_have_count(0)
        response = page.goto("/accounts/signup/")
        assert response is not None and response.status == 404
        # The README's quick start still works without an identity provider: the password form signs in.
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill("root")
        page.get_by_label("Password").fill("root password 1")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#composer-text")).to_be_visible()
