"""Reads for accounts."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import Count, DateTimeField, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from accounts.models import Invite
from chat.models import Conversation, Message


class InviteStatus(enum.StrEnum):
    VALID = "valid"
    USED = "used"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class InviteState:
    status: InviteStatus
    expires_at: datetime | None = None
    used_at: datetime | None = None

    @property
    def usable(self) -> bool:
        return self.status is InviteStatus.VALID


def invite_state(*, token: str) -> InviteState:
    invite = Invite.objects.filter(token=token).only("expires_at", "used_at").first() if token else None
    if invite is None:
        return InviteState(InviteStatus.UNKNOWN)
    if invite.used_at is not None:
        return InviteState(InviteStatus.USED, invite.expires_at, invite.used_at)
    if invite.is_expired:
        return InviteState(InviteStatus.EXPIRED, invite.expires_at)
    return InviteState(InviteStatus.VALID, invite.expires_at)


def users_with_activity(queryset: QuerySet[User]) -> QuerySet[User]:
    """Users annotated with `conversation_count` and `last_activity` (their latest message, either role).
    Correlated subqueries, so the two never multiply each other's rows."""
    conversations = (
        Conversation.objects.filter(user=OuterRef("pk"))
        .order_by()
        .values("user")
        .annotate(n=Count("pk"))
        .values("n")
    )
    last_message = (
        Message.objects.filter(conversation__user=OuterRef("pk"))
        .order_by("-created_at")
        .values("created_at")[:1]
    )
    return queryset.annotate(
        conversation_count=Coalesce(Subquery(conversations, output_field=IntegerField()), 0),
        last_activity=Subquery(last_message, output_field=DateTimeField()),
    )
