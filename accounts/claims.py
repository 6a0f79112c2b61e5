"""What an OpenID Connect provider says about a person, reduced to the few facts this site uses.
Pure functions: no settings, no database."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


@dataclass(frozen=True)
class IdentityClaims:
    """Invariant: `issuer` and `subject` are non-empty; together they name one person for good.
    `groups` is None when the provider sent no group claim at all (then memberships are left alone),
    and a tuple (maybe empty) when it sent one."""

    issuer: str
    subject: str
    email: str = ""
    email_verified: bool | None = None
    preferred_username: str = ""
    given_name: str = ""
    family_name: str = ""
    groups: tuple[str, ...] | None = None
    hosted_domain: str = ""  # Google's `hd`: the Workspace domain; absent for personal Google accounts


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`realm_access.roles` for Keycloak's realm roles), or None."""
    value: Any = claims
    for part in path.split(".") if path else []:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def group_names(value: Any) -> tuple[str, ...] | None:
    """Group claim values as Django group names. Keycloak's full group paths lose their leading slash
    ("/chat-admins" -> "chat-admins"); names longer than a Django group name can hold are dropped."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else []
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            continue
        name = item.strip().removeprefix("/")
        if name and len(name) <= 150 and name not in names:
            names.append(name)
    return tuple(names)


def _verified(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):  # some providers (older AWS Cognito, Entra B2C) send "true"/"false"
        return {"true": True, "false": False}.get(value.lower())
    return None


def identity_from_claims(claims: Mapping[str, Any], *, issuer: str, groups_claim: str) -> IdentityClaims:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ValueError("the provider sent no subject (sub) claim")
    email = claims.get("email")
    return IdentityClaims(
        issuer=issuer,
        subject=subject,
        email=email.strip() if isinstance(email, str) else "",
        email_verified=_verified(claims.get("email_verified")),
        preferred_username=str(claims.get("preferred_username") or ""),
        given_name=str(claims.get("given_name") or "")[:150],
        family_name=str(claims.get("family_name") or "")[:150],
        groups=group_names(claim_at(claims, groups_claim)),
        hosted_domain=str(claims.get("hd") or "").lower(),
    )


def username_candidate(identity: IdentityClaims) -> str:
    """A readable username to start from: the provider's username, else the email's local part."""
    base = identity.preferred_username or identity.email.split("@")[0]
    base = USERNAME_UNSAFE.sub("", base.replace(" ", "."))[:140]
    return base or "user"
