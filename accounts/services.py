"""Every write for accounts: invites, sign-up, SSO sign-in, deactivation. Keyword-only and typed."""

from __future__ import annotations

import logging
from datetime import timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from accounts.claims import IdentityClaims, username_candidate
from accounts.errors import InviteUnavailable, SignInRefused
from accounts.models import Invite, SSOIdentity
from accounts.policy import Signup, domain_allowed, signup_policy
from accounts.selectors import invite_state
from chat.models import Message
from chat.streaming import end_user_streams, request_stop

log = logging.getLogger(__name__)

GOOGLE_ISSUER = "https://accounts.google.com"


def invite_create(*, created_by: User | None, note: str = "", days: float | None = None) -> Invite:
    days = settings.INVITE_DAYS if days is None else days
    return Invite.objects.create(
        created_by=created_by, note=note, expires_at=timezone.now() + timedelta(days=days)
    )


def invite_consume(*, token: str, user: User) -> None:
    """Mark the invite used by `user`. One conditional UPDATE: of two requests racing on one link, exactly
    one succeeds. Call inside the transaction that creates the user, so a refused invite creates no one."""
    now = timezone.now()
    updated = Invite.objects.filter(token=token, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now, used_by=user
    )
    if updated != 1:
        raise InviteUnavailable(invite_state(token=token))


def invite_revoke(*, invite: Invite) -> None:
    """An unused invite stops working at once (it then reads as expired)."""
    Invite.objects.filter(pk=invite.pk, used_at__isnull=True).update(expires_at=timezone.now())


def _may_create_account(invite_token: str | None) -> None:
    """Raise InviteUnavailable/SignInRefused unless the signup policy lets a new account be made now."""
    policy = signup_policy()
    if policy is Signup.CLOSED:
        raise SignInRefused(
            "New accounts are not being created on this site. Ask a staff member to add you.",
            code="signup_closed",
        )
    if policy is Signup.INVITE and not invite_token:
        raise SignInRefused(
            "This site is invite-only, and there is no account for you here yet. "
            "Ask a staff member for an invite link, then open it and sign in from there.",
            code="invite_required",
        )


@transaction.atomic
def password_signup(*, username: str, password: str, invite_token: str | None = None) -> User:
    """Create a password account within the signup policy; with an invite, the invite is consumed in the
    same transaction."""
    _may_create_account(invite_token)
    user = User.objects.create_user(username=username, password=password)
    if invite_token:
        invite_consume(token=invite_token, user=user)
    return user


def _unique_username(base: str) -> str:
    name, n = base, 1
    while User.objects.filter(username__iexact=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _check_domain(identity: IdentityClaims) -> None:
    allowed = settings.OIDC_ALLOWED_DOMAINS
    if not allowed:
        return
    listed = ", ".join(allowed)
    if not identity.email:
        raise SignInRefused(
            f"Your identity provider did not share an email address, so this site cannot check that it is "
            f"one of the allowed domains ({listed}). Ask your administrator to release the email claim.",
            code="domain_no_email",
        )
    if identity.email_verified is False:
        raise SignInRefused(
            f"Your identity provider says the address {identity.email} is not verified, so it cannot "
            f"admit you to a site for {listed} addresses.",
            code="domain_unverified",
        )
    if identity.issuer == GOOGLE_ISSUER and not domain_allowed(f"@{identity.hosted_domain}", allowed):
        # A personal Google account can carry a verified work address; only `hd` proves Workspace.
        raise SignInRefused(
            f"Sign in with your Google Workspace account at {listed}. {identity.email} is not one "
            f"(it may be a personal Google account using that address).",
            code="domain_not_workspace",
        )
    if not domain_allowed(identity.email, allowed):
        raise SignInRefused(
            f"This site is for people with an address at {listed}. You signed in as {identity.email}, "
            f"which is not one of them. Nothing was created; sign out of your identity provider and "
            f"try again with your work account.",
            code="domain_refused",
        )


def _sync_profile(user: User, identity: IdentityClaims) -> None:
    """The provider is the source of truth for names, email, group memberships and (when
    OIDC_STAFF_GROUP is set) the staff flag. A superuser is never demoted by a missing claim."""
    fields: list[str] = []
    for field, value in (
        ("email", identity.email),
        ("first_name", identity.given_name),
        ("last_name", identity.family_name),
    ):
        if value and getattr(user, field) != value:
            setattr(user, field, value)
            fields.append(field)
    if settings.OIDC_STAFF_GROUP and identity.groups is not None:
        is_staff = settings.OIDC_STAFF_GROUP in identity.groups or user.is_superuser
        if user.is_staff != is_staff:
            user.is_staff = is_staff
            fields.append("is_staff")
    if fields:
        user.save(update_fields=fields)
    if identity.groups is not None:
        groups = [Group.objects.get_or_create(name=name)[0] for name in identity.groups]
        user.groups.set(groups)


@transaction.atomic
def sso_sign_in(*, identity: IdentityClaims, invite_token: str | None = None) -> User:
    """The account for a person the provider vouched for: found by (issuer, subject); else an existing
    account with the same address, when the provider says the address is verified; else a new account,
    if the signup policy allows (with `invite_token` under SIGNUP=invite). Domain rules apply to every
    sign-in, not just the first. Raises SignInRefused / InviteUnavailable; then nothing is written."""
    _check_domain(identity)
    link = (
        SSOIdentity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=identity.issuer, subject=identity.subject)
        .first()
    )
    if link is not None:
        user = link.user
    else:
        user = _existing_user_by_email(identity) or _new_sso_user(identity, invite_token)
        link = SSOIdentity(user=user, issuer=identity.issuer, subject=identity.subject)
    if not user.is_active:
        raise SignInRefused(
            "This account has been deactivated. Ask a staff member if you think that is a mistake.",
            code="inactive",
        )
    _sync_profile(user, identity)
    link.email = identity.email
    link.last_login_at = timezone.now()
    link.save()
    return user


def _existing_user_by_email(identity: IdentityClaims) -> User | None:
    """Link a pre-made account (e.g. from createsuperuser, or added by staff) on its first SSO sign-in,
    only on a provider-verified address and only if that account has no identity at this issuer yet."""
    if not identity.email or identity.email_verified is not True:
        return None
    candidates = list(
        User.objects.filter(email__iexact=identity.email).exclude(sso_identities__issuer=identity.issuer)[:2]
    )
    return candidates[0] if len(candidates) == 1 else None


def _new_sso_user(identity: IdentityClaims, invite_token: str | None) -> User:
    _may_create_account(invite_token)
    # No password: an SSO account signs in at the provider only (create_user makes it unusable).
    user = User.objects.create_user(username=_unique_username(username_candidate(identity)), password=None)
    if invite_token:
        invite_consume(token=invite_token, user=user)
    log.info("created user %s for %s subject %s", user.username, identity.issuer, identity.subject)
    return user


def user_deactivated(*, user_id: int) -> None:
    """Make a deactivation bite at once, beyond the next request's refusal (the auth backends return no
    user for an inactive account), once the deactivating transaction commits: `user_stop_everything`."""
    transaction.on_commit(lambda: user_stop_everything(user_id=user_id))


def user_stop_everything(*, user_id: int) -> list[int]:
    """End the user's open streams with an `ended` event that says why, then stop the replies being
    written for them, so they spend nothing more (a stopped reply keeps its text). In that order: a
    subscriber then always gets the `close` before its reply's `end`, and says "deactivated" rather than
    just "stopped". Returns the stopped replies' ids."""
    end_user_streams(user_id=user_id, reason="deactivated")
    streaming = Message.objects.filter(
        conversation__user_id=user_id, status=Message.Status.STREAMING, stop_requested=False
    )
    reply_ids = list(streaming.values_list("pk", flat=True))
    # The database flag reaches a producer on any process within a save interval, even if the
    # channel-layer message below is lost (delivery is at most once).
    Message.objects.filter(pk__in=reply_ids, status=Message.Status.STREAMING).update(stop_requested=True)
    for reply_id in reply_ids:
        async_to_sync(request_stop)(reply_id)
    log.info("user %s deactivated: streams ended, %d replies stopped", user_id, len(reply_ids))
    return reply_ids
