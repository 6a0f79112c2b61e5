"""Who may have an account: single-use invite links, and the identity-provider identity behind an SSO user."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


def new_invite_token() -> str:
    # 256 bits from the OS's CSPRNG: unguessable, and URL-safe as it stands.
    return secrets.token_urlsafe(32)


class Invite(models.Model):
    """A link that lets one person create an account. Invariant: `used_at` and `used_by` are set together,
    once, by a conditional UPDATE (see services.invite_consume), so a link can never make two accounts."""

    token = models.CharField(max_length=64, unique=True, default=new_invite_token, editable=False)
    note = models.CharField(max_length=200, blank=True, help_text="Who it is for; only staff see this.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_by = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="invite"
    )
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.note or f"Invite {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("invite", args=[self.token])

    @property
    def is_used(self) -> bool:
        return self.used_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


class SSOIdentity(models.Model):
    """The (issuer, subject) pair an OpenID Connect provider vouches for. Users are matched on this pair,
    never on a mutable claim such as the email address."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    email = models.EmailField(blank=True, help_text="As the provider last reported it.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "SSO identity"
        verbose_name_plural = "SSO identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="sso_issuer_subject")]

    def __str__(self) -> str:
        return f"{self.issuer} · {self.subject}"
