"""Sign-up, invites, log-in and the OpenID Connect round trip. Thin: policy in accounts.policy, writes in
accounts.services, reads in accounts.selectors."""

from __future__ import annotations

import logging
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views import View
from django.views.decorators.http import require_GET
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accounts import policy, selectors, services
from accounts.errors import InviteUnavailable, SignInRefused
from accounts.forms import SignupForm
from accounts.oidc import INVITE_SESSION_KEY, DiscoveryError, provider_metadata
from accounts.selectors import InviteState, InviteStatus

log = logging.getLogger(__name__)

PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"


def _invite_unavailable(request: HttpRequest, state: InviteState) -> HttpResponse:
    status = 404 if state.status is InviteStatus.UNKNOWN else 410
    return render(request, "accounts/invite_unavailable.html", {"state": state}, status=status)


def _refused(request: HttpRequest, message: str, *, code: str, status: int) -> HttpResponse:
    log.warning("sign-in refused (%s): %s", code, message)
    return render(request, "accounts/sign_in_refused.html", {"message": message, "code": code}, status=status)


def _signup_response(request: HttpRequest, form: SignupForm, invite_token: str | None) -> HttpResponse | None:
    """Create the account from a valid form and sign it in; None when the form is not ready yet."""
    if request.method != "POST" or not form.is_valid():
        return None
    user = services.password_signup(
        username=form.cleaned_data["username"],
        password=form.cleaned_data["password1"],
        invite_token=invite_token,
    )
    login(request, user, backend=PASSWORD_BACKEND)
    return redirect("chat:home")


def signup(request: HttpRequest) -> HttpResponse:
    if policy.signup_policy() is policy.Signup.CLOSED or not policy.password_login_enabled():
        raise Http404("Sign-up is closed on this site.")
    if policy.signup_policy() is policy.Signup.INVITE:
        return render(request, "accounts/invite_only.html", status=403)
    form = SignupForm(request.POST or None)
    return _signup_response(request, form, None) or render(
        request, "registration/signup.html", {"form": form}
    )


def invite(request: HttpRequest, token: str) -> HttpResponse:
    if policy.signup_policy() is policy.Signup.CLOSED:
        raise Http404("Sign-up is closed on this site.")
    state = selectors.invite_state(token=token)
    if not state.usable:
        return _invite_unavailable(request, state)
    form = SignupForm(request.POST or None) if policy.password_login_enabled() else None
    if form is not None:
        try:
            if response := _signup_response(request, form, token):
                return response
        except InviteUnavailable as error:  # used or expired while the form was open
            return _invite_unavailable(request, error.state)
    context = {
        "form": form,
        "token": token,
        "state": state,
        "sso": policy.sso_enabled(),
        "sso_name": settings.OIDC_PROVIDER_NAME,
    }
    return render(request, "accounts/invite.html", context)


@require_GET
def invite_sso(request: HttpRequest, token: str) -> HttpResponse:
    """Carry the invite through the provider's round trip in the session, then sign in there. A GET (a
    link): it only notes the invite in this browser's session; the invite is used when an account is
    made."""
    if policy.signup_policy() is policy.Signup.CLOSED or not policy.sso_enabled():
        raise Http404
    state = selectors.invite_state(token=token)
    if not state.usable:
        return _invite_unavailable(request, state)
    request.session[INVITE_SESSION_KEY] = token
    return redirect("oidc_authentication_init")


class LoginView(auth_views.LoginView):
    """Django's login, plus the SSO button; with PASSWORD_LOGIN=False the password form is gone and a
    posted password is refused."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not policy.password_login_enabled():
            raise PermissionDenied("Password sign-in is switched off on this site; use single sign-on.")
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            next_query=urlencode({"next": context.get("next", "")}),
            sso=policy.sso_enabled(),
            sso_name=settings.OIDC_PROVIDER_NAME,
            password_login=policy.password_login_enabled(),
            signup_open=policy.password_signup_open(),
            invite_only=policy.signup_policy() is policy.Signup.INVITE,
        )
        return context


def admin_login(request: HttpRequest) -> HttpResponseBase:
    """The admin's own password form, unless password sign-in is off: then the site's login page."""
    if policy.password_login_enabled():
        return admin.site.login(request)
    return redirect(
        reverse("login") + "?" + urlencode({"next": request.GET.get("next", reverse("admin:index"))})
    )


class SSOStartView(OIDCAuthenticationRequestView):
    """Redirect to the provider's authorization endpoint with state, nonce and a PKCE S256 challenge
    (all kept in the session by the library)."""

    def __init__(self, **kwargs: Any) -> None:
        View.__init__(self, **kwargs)  # not the library's: it would look the endpoint up eagerly
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID

    @property
    def OIDC_OP_AUTH_ENDPOINT(self) -> str:  # the library's attribute name
        return provider_metadata().authorization_endpoint

    def get(self, request: HttpRequest) -> HttpResponse:
        if not policy.sso_enabled():
            raise Http404
        try:
            return super().get(request)
        except DiscoveryError as error:
            return _refused(request, str(error), code="discovery", status=502)


class SSOCallbackView(OIDCAuthenticationCallbackView):
    """The provider's redirect back. Every way it can fail ends on a page that says why."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not policy.sso_enabled():
            raise Http404
        if error := request.GET.get("error"):
            super().get(request)  # forgets the state and signs out, as the library does
            detail = request.GET.get("error_description") or error
            return _refused(
                request, f"Your identity provider did not sign you in: {detail}", code=error, status=403
            )
        state = request.GET.get("state")
        if not state or not request.GET.get("code"):
            return self.login_failure()
        if state not in (request.session.get("oidc_states") or {}):
            return _refused(
                request,
                "This sign-in response does not belong to a sign-in started in this browser (its state does "
                "not match), so it was refused. Nothing was changed. Start again from the sign-in page.",
                code="state",
                status=400,
            )
        try:
            return super().get(request)
        except SignInRefused as refusal:
            return _refused(request, refusal.message, code=refusal.code, status=refusal.status)
        except InviteUnavailable as unavailable:
            return _invite_unavailable(request, unavailable.state)
        except DiscoveryError as error:
            return _refused(request, str(error), code="discovery", status=502)
        except requests.HTTPError as error:
            return _refused(request, _provider_http_error(error), code="token", status=400)
        except requests.RequestException as error:
            return _refused(
                request, f"Could not reach your identity provider: {error}", code="network", status=502
            )
        except (SuspiciousOperation, jwt.InvalidTokenError) as error:
            return _refused(
                request,
                f"The identity provider's answer could not be verified ({error}), so the sign-in was "
                "refused.",
                code="token_invalid",
                status=400,
            )

    def login_failure(self) -> HttpResponse:
        return _refused(
            self.request,
            "The sign-in could not be completed. Start again from the sign-in page.",
            code="failed",
            status=400,
        )

    def login_success(self) -> HttpResponse:
        self.request.session.pop(INVITE_SESSION_KEY, None)
        return super().login_success()


def _provider_http_error(error: requests.HTTPError) -> str:
    response = error.response
    detail = ""
    if response is not None:
        try:
            body = response.json()
            detail = f"{body.get('error', '')}: {body.get('error_description', '')}".strip(": ")
        except ValueError:
            detail = f"HTTP {response.status_code}"
    return f"Your identity provider refused to complete the sign-in ({detail or error})."
