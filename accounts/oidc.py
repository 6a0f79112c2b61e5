"""OpenID Connect sign-in on top of mozilla-django-oidc (authorization code flow with PKCE, state and
nonce). What this module adds to the library:

- real discovery: endpoints come from `<OIDC_ISSUER>/.well-known/openid-configuration`, fetched on first
  use (never at start-up, so a provider outage cannot stop the site) and cached for an hour;
- ID token checks the library leaves out: issuer, audience and authorized party;
- users matched on (issuer, subject) with the signup policy and domain rules (accounts.services);
- `get_user` that refuses inactive users, so deactivation takes effect on the next request (the
  library's own `get_user` returns inactive users).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.db import IntegrityError
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings

from accounts import services
from accounts.claims import identity_from_claims
from accounts.errors import SignInRefused

log = logging.getLogger(__name__)

DISCOVERY_TTL_SECONDS = 3600.0
# The invite a not-yet-registered person arrived with, kept in their session across the round trip.
INVITE_SESSION_KEY = "accounts_invite_token"


class DiscoveryError(Exception):
    """The provider's discovery document could not be fetched or is unusable; the message says why."""


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str
    token_endpoint_auth_methods: tuple[str, ...]

    @property
    def token_auth_basic(self) -> bool:
        """client_secret_basic unless the provider lists only client_secret_post (RFC 8414 default)."""
        return "client_secret_basic" in self.token_endpoint_auth_methods or (
            "client_secret_post" not in self.token_endpoint_auth_methods
        )


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def parse_metadata(document: Mapping[str, Any], *, issuer: str) -> ProviderMetadata:
    """Validate a discovery document against the configured issuer (OpenID Connect Discovery §4.3: the
    issuer in the document must equal the one used to find it, character for character)."""
    if document.get("issuer") != issuer:
        raise DiscoveryError(
            f"The provider's discovery document names its issuer {document.get('issuer')!r}, but OIDC_ISSUER "
            f"is {issuer!r}. Set OIDC_ISSUER to exactly the provider's issuer value."
        )
    missing = [
        key for key in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not document.get(key)
    ]
    if missing:
        raise DiscoveryError(f"The provider's discovery document has no {', '.join(missing)}.")
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=str(document["authorization_endpoint"]),
        token_endpoint=str(document["token_endpoint"]),
        jwks_uri=str(document["jwks_uri"]),
        userinfo_endpoint=str(document.get("userinfo_endpoint") or ""),
        token_endpoint_auth_methods=tuple(str(m) for m in methods),
    )


_cache: dict[str, tuple[float, ProviderMetadata]] = {}
_cache_lock = threading.Lock()


def provider_metadata() -> ProviderMetadata:
    """The configured provider's metadata, fetched over HTTP on first use and cached per issuer."""
    issuer = settings.OIDC_ISSUER
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(issuer)
        if cached and cached[0] > now:
            return cached[1]
    url = discovery_url(issuer)
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as error:
        raise DiscoveryError(
            f"Could not read the identity provider's discovery document at {url}: {error}"
        ) from error
    metadata = parse_metadata(document, issuer=issuer)
    with _cache_lock:
        _cache[issuer] = (now + DISCOVERY_TTL_SECONDS, metadata)
    return metadata


def forget_provider_metadata() -> None:
    with _cache_lock:
        _cache.clear()


def _audiences(payload: Mapping[str, Any]) -> list[str]:
    aud = payload.get("aud")
    return (
        [aud]
        if isinstance(aud, str)
        else [a for a in aud if isinstance(a, str)]
        if isinstance(aud, list)
        else []
    )


def check_id_token_claims(
    payload: Mapping[str, Any], *, issuer: str, client_id: str, nonce: str | None
) -> None:
    """OpenID Connect Core §3.1.3.7 checks beyond the signature and expiry (which PyJWT checks)."""
    if payload.get("iss") != issuer:
        raise SignInRefused(
            "The sign-in token was issued by a different provider than this site trusts, so it was refused.",
            code="issuer",
            status=400,
        )
    audiences = _audiences(payload)
    if client_id not in audiences or (len(audiences) > 1 and payload.get("azp") != client_id):
        raise SignInRefused(
            "The sign-in token was issued for a different application, so it was refused.",
            code="audience",
            status=400,
        )
    if nonce is None or payload.get("nonce") != nonce:
        raise SignInRefused(
            "The sign-in token does not belong to the sign-in started in this browser (its nonce does not "
            "match), so it was refused. Nothing was changed. Start again from the sign-in page.",
            code="nonce",
            status=400,
        )


class TeamOIDCBackend(OIDCAuthenticationBackend):
    """Authentication backend for the provider at OIDC_ISSUER."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Deliberately not the library's __init__: Django builds a backend for every request's get_user,
        # and the endpoints must not be looked up (a network call) there.
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.UserModel = get_user_model()

    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:  # the library's attribute name
        return provider_metadata().token_endpoint

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str:
        return provider_metadata().userinfo_endpoint

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:
        return provider_metadata().jwks_uri

    def get_settings(self, attr: str, *args: Any) -> Any:
        if attr == "OIDC_TOKEN_USE_BASIC_AUTH":
            return provider_metadata().token_auth_basic
        return import_from_settings(attr, *args)

    def authenticate(self, request: Any, **kwargs: Any) -> User | None:
        if not settings.OIDC_ISSUER:
            return None
        return super().authenticate(request, **kwargs)

    def get_user(self, user_id: Any) -> User | None:
        # ModelBackend's: None for an inactive user, so a deactivated user is signed out at once.
        return ModelBackend.get_user(self, user_id)

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = self.get_payload_data(token, self.retrieve_matching_jwk(token))
        check_id_token_claims(
            payload, issuer=settings.OIDC_ISSUER, client_id=self.OIDC_RP_CLIENT_ID, nonce=kwargs.get("nonce")
        )
        return payload

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The ID token's claims, completed by the userinfo endpoint where there is one (Entra ID puts
        groups in the ID token, Google and Keycloak put profile claims in userinfo)."""
        claims = dict(payload)
        if not self.OIDC_OP_USER_ENDPOINT:
            return claims
        response = requests.get(
            self.OIDC_OP_USER_ENDPOINT,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            verify=settings.OIDC_VERIFY_SSL,
            timeout=settings.OIDC_TIMEOUT,
        )
        response.raise_for_status()
        if response.headers.get("content-type", "").lower().startswith("application/jwt"):
            info = self.get_payload_data(response.text, self.retrieve_matching_jwk(response.text))
        else:
            info = response.json()
        if info.get("sub") != payload.get("sub"):  # Core §5.3.2: a different sub must not be used
            raise SignInRefused(
                "The identity provider described a different person than it signed in, so the sign-in was "
                "refused.",
                code="userinfo_subject",
                status=400,
            )
        claims.update(info)
        return claims

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> User:
        claims = self.get_userinfo(access_token, id_token, payload)
        try:
            identity = identity_from_claims(
                claims, issuer=settings.OIDC_ISSUER, groups_claim=settings.OIDC_GROUPS_CLAIM
            )
        except ValueError as error:
            raise SignInRefused(
                f"The identity provider's answer was incomplete: {error}.", code="claims"
            ) from error
        invite_token = self.request.session.get(INVITE_SESSION_KEY)
        try:
            return services.sso_sign_in(identity=identity, invite_token=invite_token)
        except IntegrityError:
            # Two first sign-ins of one person at once (two tabs): the other one made the account and
            # its link a moment ago; this attempt, rolled back, now finds them.
            return services.sso_sign_in(identity=identity, invite_token=invite_token)
