"""Signup policy and sign-in options, read from settings. Pure functions: no database access."""

from __future__ import annotations

import enum

from django.conf import settings


class Signup(enum.StrEnum):
    OPEN = "open"  # anyone who reaches the site (or passes the SSO domain rules) may create an account
    INVITE = "invite"  # only with a single-use invite link made by staff
    CLOSED = "closed"  # no new accounts (staff add people in the admin; createsuperuser always works)


def signup_policy() -> Signup:
    return Signup(settings.SIGNUP)


def sso_enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def password_login_enabled() -> bool:
    """False only when SSO is on and PASSWORD_LOGIN=False (settings refuse it without SSO)."""
    return bool(settings.PASSWORD_LOGIN) or not sso_enabled()


def password_signup_open() -> bool:
    """Whether /accounts/signup/ offers a form to anyone (no invite needed)."""
    return signup_policy() is Signup.OPEN and password_login_enabled()


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].strip().lower() if "@" in email else ""


def domain_allowed(email: str, allowed: list[str] | tuple[str, ...]) -> bool:
    """An empty allow-list admits any domain; otherwise the address's domain must be listed exactly
    (sub-domains are not implied: list them)."""
    if not allowed:
        return True
    domain = email_domain(email)
    return bool(domain) and domain in {d.strip().lower().lstrip("@") for d in allowed if d.strip()}
