from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views
from chat.throttling import throttle_signups

urlpatterns = [
    # Sign-up POSTs (open, or through an invite) count against the client address's hourly limit.
    path("accounts/signup/", throttle_signups(views.signup), name="signup"),
    path("accounts/invite/<str:token>/", throttle_signups(views.invite), name="invite"),
    path("accounts/invite/<str:token>/sso/", views.invite_sso, name="invite_sso"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("oidc/authenticate/", views.SSOStartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", views.SSOCallbackView.as_view(), name="oidc_authentication_callback"),
]
