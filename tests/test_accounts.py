"""Signup policy, invite links, the admin's user list, and deactivation, through Django's test client;
plus unit tests of the pure functions behind SSO (claims, domain rule, discovery document, ID token)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.claims import IdentityClaims, claim_at, group_names, identity_from_claims, username_candidate
from accounts.errors import InviteUnavailable, SignInRefused
from accounts.models import Invite, SSOIdentity
from accounts.oidc import DiscoveryError, check_id_token_claims, parse_metadata
from accounts.policy import domain_allowed
from accounts.selectors import InviteStatus
from accounts.services import invite_consume, invite_create
from chat.models import Conversation, Message
from tests.support.settings_process import settings_value

PASSWORD = "a-long-pass-phrase-9"


def signup_form(username: str) -> dict[str, str]:
    return {"username": username, "password1": PASSWORD, "password2": PASSWORD}


# --- pure functions ------------------------------------------------------------------------------


def test_domain_rule() -> None:
    assert domain_allowed("dana@example.com", [])
    assert domain_allowed("Dana@Example.COM", ["example.com"])
    assert domain_allowed("dana@example.org", ["example.com", "@example.org"])
    assert not domain_allowed("dana@sub.example.com", ["example.com"])  # sub-domains must be listed
    assert not domain_allowed("dana@example.com.evil.org", ["example.com"])
    assert not domain_allowed("no-at-sign", ["example.com"])
    assert not domain_allowed("", ["example.com"])


def test_group_claims() -> None:
    assert group_names(None) is None
    assert group_names([]) == ()
    assert group_names("admins") == ("admins",)
    assert group_names(["/team/admins", "/team/admins", "x" * 151, 7, " ops "]) == ("team/admins", "ops")
    claims = {"realm_access": {"roles": ["chat-admins"]}, "groups": ["a"]}
    assert claim_at(claims, "realm_access.roles") == ["chat-admins"]
    assert claim_at(claims, "realm_access.missing") is None
    assert claim_at(claims, "groups.x") is None


def test_identity_from_claims() -> None:
    identity = identity_from_claims(
        {"sub": "42", "email": " a@example.com ", "email_verified": "true", "groups": ["/g"]},
        issuer="https://idp",
        groups_claim="groups",
    )
    assert identity == IdentityClaims(
        issuer="https://idp", subject="42", email="a@example.com", email_verified=True, groups=("g",)
    )
    assert identity_from_claims({"sub": "1"}, issuer="i", groups_claim="groups").groups is None
    with pytest.raises(ValueError, match="no subject"):
        identity_from_claims({"email": "a@example.com"}, issuer="i", groups_claim="groups")


def test_username_candidate() -> None:
    assert username_candidate(IdentityClaims("i", "s", preferred_username="dana")) == "dana"
    assert username_candidate(IdentityClaims("i", "s", email="dana.ng@example.com")) == "dana.ng"
    assert username_candidate(IdentityClaims("i", "s", preferred_username="Dana Ng <x>")) == "Dana.Ng.x"
    assert username_candidate(IdentityClaims("i", "s")) == "user"


def test_discovery_document_must_name_the_configured_issuer() -> None:
    document = {
        "issuer": "https://idp.example.com/realms/team",
        "authorization_endpoint": "https://idp.example.com/auth",
        "token_endpoint": "https://idp.example.com/token",
        "jwks_uri": "https://idp.example.com/certs",
    }
    metadata = parse_metadata(document, issuer="https://idp.example.com/realms/team")
    assert metadata.token_auth_basic and metadata.userinfo_endpoint == ""
    with pytest.raises(DiscoveryError, match="Set OIDC_ISSUER to exactly"):
        parse_metadata(document, issuer="https://idp.example.com/realms/team/")
    with pytest.raises(DiscoveryError, match="no jwks_uri"):
        parse_metadata({**document, "jwks_uri": ""}, issuer=document["issuer"])
    post_only = {**document, "token_endpoint_auth_methods_supported": ["client_secret_post"]}
    assert not parse_metadata(post_only, issuer=document["issuer"]).token_auth_basic


def test_id_token_checks() -> None:
    good = {"iss": "https://idp", "aud": "chatsite", "nonce": "n1"}
    check_id_token_claims(good, issuer="https://idp", client_id="chatsite", nonce="n1")
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "iss": "https://other"}, "issuer"),
        ({**good, "aud": "another-app"}, "audience"),
        ({**good, "aud": ["chatsite", "another-app"]}, "audience"),  # several audiences need azp
        ({**good, "nonce": "n2"}, "nonce"),
        ({k: v for k, v in good.items() if k != "nonce"}, "nonce"),
    ]
    for payload, code in cases:
        with pytest.raises(SignInRefused) as refused:
            check_id_token_claims(payload, issuer="https://idp", client_id="chatsite", nonce="n1")
        assert refused.value.code == code
    check_id_token_claims(
        {**good, "aud": ["chatsite", "x"], "azp": "chatsite"},
        issuer="https://idp",
        client_id="chatsite",
        nonce="n1",
    )


@pytest.mark.django_db
def test_google_needs_the_workspace_domain_not_just_the_address(settings: Any) -> None:
    from accounts.services import GOOGLE_ISSUER, sso_sign_in

    settings.OIDC_ALLOWED_DOMAINS = ["example.com"]
    settings.SIGNUP = "open"
    personal = IdentityClaims(GOOGLE_ISSUER, "1", email="dana@example.com", email_verified=True)
    with pytest.raises(SignInRefused) as refused:
        sso_sign_in(identity=personal)
    assert refused.value.code == "domain_not_workspace"
    workspace = IdentityClaims(
        GOOGLE_ISSUER, "2", email="dana@example.com", email_verified=True, hosted_domain="example.com"
    )
    assert sso_sign_in(identity=workspace).email == "dana@example.com"
    assert User.objects.count() == 1


# --- signup policy -------------------------------------------------------------------------------


def _settings_value(env: dict[str, str], name: str) -> str:
    # Only what the test gives, on top of a clean environment (no SIGNUP/DEBUG from the caller).
    return settings_value(env, name, unset=("SIGNUP", "DEBUG", "SECRET_KEY"))


def test_signup_defaults_to_invite_without_debug_and_open_with_it() -> None:
    production = {"DEBUG": "False", "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "chat.example.com"}
    assert _settings_value(production, "SIGNUP") == "invite"
    assert _settings_value({"DEBUG": "True"}, "SIGNUP") == "open"
    assert _settings_value({**production, "SIGNUP": "closed"}, "SIGNUP") == "closed"


def test_password_login_off_needs_sso_and_drops_the_password_backend() -> None:
    sso = {
        "DEBUG": "True",
        "OIDC_ISSUER": "https://idp.example.com",
        "OIDC_CLIENT_ID": "c",
        "OIDC_CLIENT_SECRET": "s",
    }
    with_passwords = _settings_value(sso, "AUTHENTICATION_BACKENDS")
    assert "'django.contrib.auth.backends.ModelBackend'" in with_passwords
    assert "'accounts.oidc.TeamOIDCBackend'" in with_passwords
    sso_only = _settings_value({**sso, "PASSWORD_LOGIN": "False"}, "AUTHENTICATION_BACKENDS")
    assert "ModelBackend" not in sso_only and "'accounts.oidc.TeamOIDCBackend'" in sso_only
    with pytest.raises(AssertionError, match="PASSWORD_LOGIN=False needs OIDC_ISSUER"):
        _settings_value({"DEBUG": "True", "PASSWORD_LOGIN": "False"}, "AUTHENTICATION_BACKENDS")


@pytest.mark.django_db
def test_open_signup_is_linked_from_the_login_page(settings: Any) -> None:
    settings.SIGNUP = "open"
    assert 'href="/accounts/signup/"' in Client().get("/accounts/login/").content.decode()
    client = Client()
    assert client.post("/accounts/signup/", signup_form("carol")).status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_closed_signup_hides_the_signup_page(settings: Any) -> None:
    settings.SIGNUP = "closed"
    login_page = Client().get("/accounts/login/").content.decode()
    assert "/accounts/signup/" not in login_page and "Sign up" not in login_page
    assert Client().get("/accounts/signup/").status_code == 404
    assert Client().post("/accounts/signup/", signup_form("carol")).status_code == 404
    invite = invite_create(created_by=None)
    assert Client().get(f"/accounts/invite/{invite.token}/").status_code == 404
    assert not User.objects.exists()


@pytest.mark.django_db
def test_invite_only_signup_page_explains_and_creates_nobody(settings: Any) -> None:
    settings.SIGNUP = "invite"
    login_page = Client().get("/accounts/login/").content.decode()
    assert 'href="/accounts/signup/"' not in login_page
    assert "ask a staff member for an invite link" in login_page
    response = Client().post("/accounts/signup/", signup_form("carol"))
    assert response.status_code == 403
    assert "Sign-up is by invitation" in response.content.decode()
    assert not User.objects.exists()


# --- invites ----------------------------------------------------------------------------------------


@pytest.fixture
def staff_web(db: None) -> Client:
    admin = User.objects.create_superuser("root", "root@example.com", "x" * 20)
    client = Client()
    client.force_login(admin)
    return client


def test_staff_make_an_invite_in_the_admin_and_it_works_once(staff_web: Client, settings: Any) -> None:
    settings.SIGNUP = "invite"
    added = staff_web.post(
        "/admin/accounts/invite/add/",
        {"note": "for Dana", "expires_at_0": "2999-01-01", "expires_at_1": "12:00:00"},
        follow=True,
    )
    text = added.content.decode()
    link = re.search(r"http://testserver(/accounts/invite/[\w-]+/)", text)
    assert link, text
    invite = Invite.objects.get()
    assert invite.created_by is not None and invite.created_by.username == "root"
    assert len(invite.token) >= 43  # 256 random bits
    assert link.group(0) in staff_web.get("/admin/accounts/invite/").content.decode()  # listed for copying
    change_page = staff_web.get(f"/admin/accounts/invite/{invite.pk}/change/")
    assert change_page.status_code == 200 and link.group(0) in change_page.content.decode()

    dana = Client()
    page = dana.get(link.group(1))
    assert page.status_code == 200 and "You're invited" in page.content.decode()
    assert dana.post(link.group(1), signup_form("dana")).status_code == 302
    assert dana.get("/").status_code == 200
    invite.refresh_from_db()
    assert invite.used_by == User.objects.get(username="dana") and invite.used_at is not None

    again = Client()
    refused = again.get(link.group(1))
    assert refused.status_code == 410
    assert "This invite link has already been used" in refused.content.decode()
    assert again.post(link.group(1), signup_form("eve")).status_code == 410
    assert not User.objects.filter(username="eve").exists()
    assert "—" in staff_web.get("/admin/accounts/invite/").content.decode()  # link no longer offered


@pytest.mark.django_db
def test_invite_command_prints_a_working_link(settings: Any) -> None:
    from io import StringIO

    from django.core.management import call_command

    settings.SIGNUP = "invite"
    out = StringIO()
    call_command(
        "invite",
        "--note",
        "for Dana",
        "--base-url",
        "https://chat.example.com/",
        stdout=out,
        stderr=StringIO(),
    )
    url = out.getvalue().strip()
    assert re.fullmatch(r"https://chat\.example\.com/accounts/invite/[\w-]{43}/", url), url
    assert Invite.objects.get().note == "for Dana"
    assert Client().get(url.removeprefix("https://chat.example.com")).status_code == 200


@pytest.mark.django_db
def test_expired_and_unknown_invite_links_get_clear_pages(settings: Any) -> None:
    settings.SIGNUP = "invite"
    invite = invite_create(created_by=None, days=1)
    Invite.objects.filter(pk=invite.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    expired = Client().post(f"/accounts/invite/{invite.token}/", signup_form("late"))
    assert expired.status_code == 410
    assert "This invite link has expired" in expired.content.decode()
    unknown = Client().get("/accounts/invite/not-a-real-token/")
    assert unknown.status_code == 404
    assert "This invite link is not valid" in unknown.content.decode()
    assert not User.objects.exists()


@pytest.mark.django_db
def test_an_invite_is_consumed_once_even_when_two_signups_race() -> None:
    invite = invite_create(created_by=None)
    first = User.objects.create_user("first")
    second = User.objects.create_user("second")
    invite_consume(token=invite.token, user=first)
    with pytest.raises(InviteUnavailable) as unavailable:
        invite_consume(token=invite.token, user=second)
    assert unavailable.value.state.status is InviteStatus.USED
    invite.refresh_from_db()
    assert invite.used_by == first


def test_revoking_an_invite_makes_it_expired(staff_web: Client, settings: Any) -> None:
    settings.SIGNUP = "invite"
    invite = invite_create(created_by=None)
    staff_web.post(
        "/admin/accounts/invite/", {"action": "revoke", "_selected_action": [invite.pk]}, follow=True
    )
    assert Client().get(f"/accounts/invite/{invite.token}/").status_code == 410


# --- admin: users --------------------------------------------------------------------------------


def test_user_admin_shows_conversations_last_activity_and_sso_identity(staff_web: Client) -> None:
    dana = User.objects.create_user("dana")
    for title in ("One", "Two"):
        conversation = Conversation.objects.create(user=dana, title=title)
        Message.objects.create(conversation=conversation, role="user", content="hi")
    latest = Message.objects.filter(conversation__user=dana).latest("created_at")
    Message.objects.filter(pk=latest.pk).update(created_at=datetime(2031, 5, 6, 7, 8, tzinfo=UTC))
    SSOIdentity.objects.create(user=dana, issuer="https://idp.example.com/realms/team", subject="f81d4fae")

    page = staff_web.get("/admin/auth/user/?o=1").content.decode()
    row = page[page.index(">dana<") :]
    row = row[: row.index("</tr>")]
    assert '<td class="field-conversation_count">2</td>' in row
    assert "May 6, 2031" in row
    assert "https://idp.example.com/realms/team · f81d4fae" in row
    assert '<td class="field-conversation_count">0</td>' in page  # root, with none

    change = staff_web.get(f"/admin/auth/user/{dana.pk}/change/").content.decode()
    assert "f81d4fae" in change and "SSO identit" in change


# --- deactivation --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_deactivated_user_loses_access_on_the_next_request(alice: User, alice_client: Any) -> None:
    assert (await alice_client.request("GET", "/")).status == 200
    alice.is_active = False
    await alice.asave(update_fields=["is_active"])
    sync_view = await alice_client.request("GET", "/")
    assert sync_view.status == 302 and sync_view.headers["location"].startswith("/accounts/login/")
    async_view = await alice_client.request("POST", "/c/start/", data={"text": "hello"})
    assert async_view.status == 302 and async_view.headers["location"].startswith("/accounts/login/")
    assert not await Message.objects.aexists()


def test_user_admin_list_costs_the_same_queries_for_many_users(staff_web: Client) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff_web.get("/admin/auth/user/").status_code == 200
        return len(captured.captured_queries)

    User.objects.create_user("u0")
    queries()  # warm-up: a first request may also write the session (its expiry), once
    few = queries()
    for n in range(1, 30):
        user = User.objects.create_user(f"u{n}")
        Conversation.objects.create(user=user, title="t")
        SSOIdentity.objects.create(user=user, issuer="https://idp", subject=str(n))
    assert queries() == few  # no query per row
