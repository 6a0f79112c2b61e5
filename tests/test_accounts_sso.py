"""Sign-in with OpenID Connect against a real provider process (tests/support/oidc_provider.py): real
discovery, authorization code with PKCE, token, userinfo and JWKS over loopback HTTP. The site runs in
this process behind Django's test client; nothing on either side is mocked."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from accounts.models import SSOIdentity
from accounts.services import invite_create
from tests.support.oidc import OIDCProvider


def start(client: Client, next_url: str | None = None) -> str:
    """Begin a sign-in on the site; returns the provider's authorization URL it redirects to."""
    response = client.get("/oidc/authenticate/", {"next": next_url} if next_url else {})
    assert response.status_code == 302, response.content
    return str(response["Location"])


def sign_in(client: Client, provider: OIDCProvider, username: str) -> Any:
    """The whole round trip: our start, the provider's login page, our callback. Returns the callback's
    response."""
    callback = provider.log_in(start(client), username)
    return client.get(callback)


def with_query(url: str, **changes: str) -> str:
    parts = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunparse(parts._replace(query=urlencode(query)))


def signed_in(client: Client) -> bool:
    return client.get("/").status_code == 200


def test_the_authorization_request_carries_state_nonce_and_a_pkce_s256_challenge(sso: OIDCProvider) -> None:
    url = urlparse(start(Client()))
    query = parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}" == sso.issuer  # the endpoint came from discovery
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32
    assert set(query["scope"][0].split()) >= {"openid", "email", "profile"}


def test_first_sign_in_creates_the_user_and_the_second_reuses_it(sso: OIDCProvider) -> None:
    sso.add_user("dana", email="dana@example.com", email_verified=True, given_name="Dana", family_name="Ng")
    client = Client()
    response = sign_in(client, sso, "dana")
    assert response.status_code == 302 and response["Location"] == "/"
    assert signed_in(client)
    user = User.objects.get(username="dana")
    assert (user.email, user.first_name, user.last_name) == ("dana@example.com", "Dana", "Ng")
    assert not user.has_usable_password()
    assert 'href="/accounts/password/"' not in client.get("/").content.decode()  # no password to change
    identity = SSOIdentity.objects.get(user=user)
    assert identity.issuer == sso.issuer and identity.subject.startswith("dana-")

    again = Client()
    assert sign_in(again, sso, "dana").status_code == 302
    assert signed_in(again)
    assert User.objects.count() == 1
    assert SSOIdentity.objects.get().user_id == user.pk
    assert again.session["_auth_user_id"] == str(user.pk)


def test_next_url_is_kept_through_the_round_trip(sso: OIDCProvider, alice: User) -> None:
    sso.add_user("erin", email="erin@example.com")
    client = Client()
    login_page = client.get("/accounts/login/", {"next": "/search/?q=x"}).content.decode()
    assert 'href="/oidc/authenticate/?next=%2Fsearch%2F%3Fq%3Dx"' in login_page
    callback = sso.log_in(start(client, next_url="/search/?q=x"), "erin")
    assert client.get(callback)["Location"] == "/search/?q=x"


def test_group_claim_maps_to_django_groups_and_the_staff_value_makes_staff(sso: OIDCProvider) -> None:
    sso.add_user("fay", sub="fay-1", email="fay@example.com", groups=["engineering", "/chat-admins"])
    sign_in(Client(), sso, "fay")
    fay = User.objects.get(username="fay")
    assert set(fay.groups.values_list("name", flat=True)) == {"engineering", "chat-admins"}
    assert fay.is_staff and not fay.is_superuser

    # The provider is the source of truth: the next sign-in moves her to support and drops staff.
    sso.add_user("fay", sub="fay-1", email="fay@example.com", groups=["support"])
    sign_in(Client(), sso, "fay")
    fay.refresh_from_db()
    assert list(fay.groups.values_list("name", flat=True)) == ["support"]
    assert not fay.is_staff
    assert Group.objects.filter(name="engineering").exists()  # groups themselves are left in place


def test_an_address_outside_the_allowed_domains_is_refused_with_a_clear_message(sso: OIDCProvider) -> None:
    sso.add_user("eve", email="eve@elsewhere.org", email_verified=True)
    client = Client()
    response = sign_in(client, sso, "eve")
    assert response.status_code == 403
    text = response.content.decode()
    assert "This site is for people with an address at example.com" in text
    assert "eve@elsewhere.org" in text
    assert not User.objects.exists() and not SSOIdentity.objects.exists()
    assert not signed_in(client)


def test_an_unverified_address_cannot_pass_the_domain_rule(sso: OIDCProvider) -> None:
    sso.add_user("mal", email="ceo@example.com", email_verified=False)
    response = sign_in(Client(), sso, "mal")
    assert response.status_code == 403
    assert "is not verified" in response.content.decode()
    assert not User.objects.exists()


def test_a_bad_state_is_refused_with_a_clear_message(sso: OIDCProvider) -> None:
    sso.add_user("gus", email="gus@example.com")
    client = Client()
    callback = sso.log_in(start(client), "gus")
    response = client.get(with_query(callback, state="forged-state-value"))
    assert response.status_code == 400
    assert "its state does not match" in response.content.decode()
    assert not User.objects.exists()
    assert not signed_in(client)


def test_a_callback_in_another_browser_is_refused(sso: OIDCProvider) -> None:
    """Login CSRF: an attacker's own code and state, delivered to a victim's browser."""
    sso.add_user("mallory", email="mallory@example.com")
    callback = sso.log_in(start(Client()), "mallory")
    victim = Client()
    response = victim.get(callback)
    assert response.status_code == 400
    assert "its state does not match" in response.content.decode()
    assert not signed_in(victim)


def test_a_bad_nonce_is_refused_with_a_clear_message(sso: OIDCProvider) -> None:
    sso.add_user("hal", email="hal@example.com")
    client = Client()
    callback = sso.log_in(start(client), "hal")
    sso.issue_next_id_token_with_nonce("a-nonce-from-another-sign-in")
    response = client.get(callback)
    assert response.status_code == 400
    assert "its nonce does not match" in response.content.decode()
    assert not User.objects.exists()
    assert not signed_in(client)


def test_an_injected_code_fails_pkce_at_the_provider(sso: OIDCProvider) -> None:
    """A code obtained in one sign-in, pushed into another browser's sign-in with that browser's own valid
    state: the provider refuses to exchange it, because the code verifier does not match."""
    sso.add_user("ivy", email="ivy@example.com")
    stolen = parse_qs(urlparse(sso.log_in(start(Client()), "ivy")).query)["code"][0]
    victim = Client()
    own_state = parse_qs(urlparse(start(victim)).query)["state"][0]
    response = victim.get("/oidc/callback/", {"code": stolen, "state": own_state})
    assert response.status_code == 400
    text = response.content.decode()
    assert "refused to complete the sign-in" in text and "invalid_grant" in text
    assert not User.objects.exists()


def test_an_error_from_the_provider_is_shown(sso: OIDCProvider) -> None:
    client = Client()
    state = parse_qs(urlparse(start(client)).query)["state"][0]
    response = client.get(
        "/oidc/callback/", {"error": "access_denied", "error_description": "The user said no", "state": state}
    )
    assert response.status_code == 403
    assert "did not sign you in: The user said no" in response.content.decode()


def test_closed_signup_creates_no_sso_accounts(sso: OIDCProvider, settings: Any) -> None:
    settings.SIGNUP = "closed"
    sso.add_user("jo", email="jo@example.com")
    response = sign_in(Client(), sso, "jo")
    assert response.status_code == 403
    assert "New accounts are not being created" in response.content.decode()
    assert not User.objects.exists()


def test_invite_signup_needs_an_invite_for_sso_and_uses_it_once(sso: OIDCProvider, settings: Any) -> None:
    settings.SIGNUP = "invite"
    sso.add_user("kim", email="kim@example.com")
    sso.add_user("lee", email="lee@example.com")

    refused = sign_in(Client(), sso, "kim")
    assert refused.status_code == 403
    assert "invite-only" in refused.content.decode()
    assert not User.objects.exists()

    invite = invite_create(created_by=None, note="for Kim")
    client = Client()
    page = client.get(f"/accounts/invite/{invite.token}/")
    assert "Join with Test IdP" in page.content.decode()
    carried = client.get(f"/accounts/invite/{invite.token}/sso/")
    assert carried["Location"] == "/oidc/authenticate/"
    callback = sso.log_in(start(client), "kim")
    assert client.get(callback).status_code == 302
    kim = User.objects.get(username="kim")
    invite.refresh_from_db()
    assert invite.used_by == kim and invite.used_at is not None
    assert "accounts_invite_token" not in client.session

    # The same link for a second person: the link page says it is used, and so does the round trip.
    other = Client()
    used_page = other.get(f"/accounts/invite/{invite.token}/")
    assert used_page.status_code == 410
    assert "already been used" in used_page.content.decode()
    session = other.session
    session["accounts_invite_token"] = invite.token  # as if they had opened it a moment before Kim
    session.save()
    late = sign_in(other, sso, "lee")
    assert late.status_code == 410
    assert not User.objects.filter(username="lee").exists()


def test_a_pre_made_account_is_linked_by_verified_email(sso: OIDCProvider, settings: Any) -> None:
    settings.SIGNUP = "closed"
    admin = User.objects.create_superuser("root", email="Boss@Example.com", password="x" * 20)
    sso.add_user("boss", email="boss@example.com", email_verified=True, groups=["engineering"])
    assert sign_in(Client(), sso, "boss").status_code == 302
    assert User.objects.count() == 1
    identity = SSOIdentity.objects.get()
    assert identity.user == admin
    admin.refresh_from_db()
    assert admin.is_staff and admin.is_superuser  # no staff group claim value, but never demote a superuser


def test_deactivated_sso_user_loses_access_on_the_next_request(sso: OIDCProvider) -> None:
    sso.add_user("max", email="max@example.com")
    client = Client()
    sign_in(client, sso, "max")
    assert signed_in(client)
    User.objects.filter(username="max").update(is_active=False)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    again = sign_in(Client(), sso, "max")
    assert again.status_code == 403
    assert "deactivated" in again.content.decode()


def test_password_login_can_be_switched_off(sso: OIDCProvider, settings: Any, alice: User) -> None:
    password_client = Client()
    password_client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    assert signed_in(password_client)

    settings.PASSWORD_LOGIN = False
    # As settings.py makes it then: the password backend is gone.
    settings.AUTHENTICATION_BACKENDS = [
        b for b in settings.AUTHENTICATION_BACKENDS if b != "django.contrib.auth.backends.ModelBackend"
    ]
    page = Client().get("/accounts/login/").content.decode()
    assert "Sign in with Test IdP" in page
    assert 'type="password"' not in page and "Sign up" not in page
    refused = Client().post(
        "/accounts/login/", {"username": "alice", "password": "correct horse battery staple"}
    )
    assert refused.status_code == 403
    assert not signed_in(password_client)  # password sessions end too
    assert Client().get("/accounts/signup/").status_code == 404
    admin_login = Client().get("/admin/login/?next=/admin/")
    assert admin_login.status_code == 302 and admin_login["Location"] == "/accounts/login/?next=%2Fadmin%2F"

    sso.add_user("ned", email="ned@example.com")
    sso_client = Client()
    sign_in(sso_client, sso, "ned")
    assert signed_in(sso_client)


def test_an_unreachable_provider_gives_a_clear_page(sso: OIDCProvider, settings: Any) -> None:
    settings.OIDC_ISSUER = "http://127.0.0.1:9"  # discard port: nothing listens
    response = Client().get("/oidc/authenticate/")
    assert response.status_code == 502
    assert "Could not read the identity provider&#x27;s discovery document" in response.content.decode()


@pytest.mark.parametrize("policy", ["open", "invite", "closed"])
def test_login_page_offers_sso(sso: OIDCProvider, settings: Any, policy: str) -> None:
    settings.SIGNUP = policy
    page = Client().get("/accounts/login/").content.decode()
    assert "Sign in with Test IdP" in page
    assert ('href="/accounts/signup/"' in page) is (policy == "open")
