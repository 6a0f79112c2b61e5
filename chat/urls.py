from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("search/", views.conversation_search, name="search"),
    path("c/start/", views.conversation_start, name="start"),
    path("c/<int:pk>/", views.conversation_detail, name="conversation"),
    path("c/<int:pk>/send/", views.message_send, name="send"),
    path("c/<int:pk>/settings/", views.conversation_update, name="update"),
    path("c/<int:pk>/delete/", views.conversation_delete, name="delete"),
    path("c/<int:pk>/export.<str:fmt>", views.conversation_export, name="export"),
    path("c/<int:pk>/m/<int:message_pk>/stream/", views.message_stream, name="stream"),
    path("c/<int:pk>/m/<int:message_pk>/stop/", views.message_stop, name="stop"),
    path("c/<int:pk>/m/<int:message_pk>/retry/", views.message_retry, name="retry"),
    path("c/<int:pk>/m/<int:message_pk>/continue/", views.message_continue, name="continue"),
]
