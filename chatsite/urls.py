from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts import views as accounts_views
from chat import ops, throttling

urlpatterns = [
    # Operations (chat/ops.py): no login, no session, no HTTPS redirect (SECURE_REDIRECT_EXEMPT).
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
    # Before the admin's own URLs: with password sign-in off, the admin's login form must not be offered.
    path("admin/login/", accounts_views.admin_login),
    path("admin/", admin.site.urls),
    path(
        "accounts/password/",
        throttling.throttle_password_changes(auth_views.PasswordChangeView.as_view()),
        name="password_change",
    ),
    path("accounts/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("", include("accounts.urls")),
    path("", include("usage.urls")),
    path("", include("chat.urls")),
]
