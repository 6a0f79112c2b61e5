from django.urls import path

from usage import views

app_name = "usage"

urlpatterns = [
    path("usage/", views.usage_page, name="mine"),
    path("usage/staff/", views.dashboard, name="dashboard"),
    path("usage/staff/users.csv", views.dashboard_users_csv, name="users_csv"),
]
