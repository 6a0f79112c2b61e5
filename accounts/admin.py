"""Staff tools: invite links, and users with their conversation count, last activity and SSO identity."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from accounts import selectors, services
from accounts.models import Invite, SSOIdentity

# The request being served, so that list and change pages can show an absolute link staff can copy as it
# stands. A context variable: each request runs in its own context, so concurrent requests never mix.
_current_request: ContextVar[HttpRequest | None] = ContextVar("invite_admin_request", default=None)


def _invite_url(request: HttpRequest, invite: Invite) -> str:
    return request.build_absolute_uri(invite.get_absolute_url())


def _rendered(response: Any) -> Any:
    """Render a TemplateResponse now, while the request is still in `_current_request`."""
    if isinstance(response, TemplateResponse):
        response.render()
    return response


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "link", "expires_at", "created_by", "used_by", "used_at")
    list_select_related = ("created_by", "used_by")
    actions = ("revoke",)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        token = _current_request.set(request)
        try:
            return _rendered(super().changelist_view(request, extra_context))
        finally:
            _current_request.reset(token)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        token = _current_request.set(request)
        try:
            return _rendered(super().change_view(request, object_id, form_url, extra_context))
        finally:
            _current_request.reset(token)

    @admin.display(description="link")
    def link(self, invite: Invite) -> str:
        request = _current_request.get()
        if invite.is_used or invite.is_expired or request is None:
            return "—"
        url = _invite_url(request, invite)
        return format_html('<a href="{}">{}</a>', url, url)

    def get_fields(self, request: HttpRequest, obj: Invite | None = None) -> Any:
        if obj is None:
            return ("note", "expires_at")
        return ("note", "expires_at", *self.get_readonly_fields(request, obj))

    def get_readonly_fields(self, request: HttpRequest, obj: Invite | None = None) -> Any:
        return () if obj is None else ("link", "status", "created_by", "created_at", "used_by", "used_at")

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"expires_at": timezone.now() + timedelta(days=settings.INVITE_DAYS)}

    def save_model(self, request: HttpRequest, obj: Invite, form: ModelForm[Invite], change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: Invite, post_url_continue: str | None = None
    ) -> HttpResponse:
        self.message_user(
            request,
            format_html(
                "Invite link (works once, until {}): <code>{}</code>",
                obj.expires_at,
                _invite_url(request, obj),
            ),
            messages.SUCCESS,
        )
        return super().response_add(request, obj, post_url_continue)

    @admin.display(description="status")
    def status(self, invite: Invite) -> str:
        if invite.is_used:
            return "used"
        return "expired" if invite.is_expired else "valid"

    @admin.action(description="Revoke the selected unused invites")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Invite]) -> None:
        for invite in queryset:
            services.invite_revoke(invite=invite)


class SSOIdentityInline(admin.TabularInline):
    model = SSOIdentity
    fields = ("issuer", "subject", "email", "created_at", "last_login_at")
    readonly_fields = fields
    extra = 0
    can_delete = True  # deleting unlinks: the next SSO sign-in links again (or is refused)
    verbose_name = "SSO identity"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


admin.site.unregister(User)


@admin.register(User)
class TeamUserAdmin(UserAdmin):
    list_display = (
        "username",
        "email",
        "is_active",
        "is_staff",
        "conversation_count",
        "last_activity",
        "sso_identity",
        "last_login",
    )
    inlines = (SSOIdentityInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return selectors.users_with_activity(super().get_queryset(request)).prefetch_related("sso_identities")

    @admin.display(description="conversations", ordering="conversation_count")
    def conversation_count(self, user: User) -> int:
        return int(getattr(user, "conversation_count", 0))

    @admin.display(description="last activity", ordering="last_activity")
    def last_activity(self, user: User) -> Any:
        return getattr(user, "last_activity", None)

    @admin.display(description="SSO identity")
    def sso_identity(self, user: User) -> str:
        identities = list(user.sso_identities.all())
        return "; ".join(f"{i.issuer} · {i.subject}" for i in identities) or "—"
