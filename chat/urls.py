from django.urls import path, register_converter

from chat import views


class ExportFormat:
    """Only the two export formats exist; anything else (another extension, a CR/LF) is a 404."""

    regex = "md|json"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ExportFormat, "export_format")

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("search/", views.conversation_search, name="search"),
    path("c/start/", views.conversation_start, name="start"),
    path("c/<int:pk>/", views.conversation_detail, name="conversation"),
    path("c/<int:pk>/send/", views.message_send, name="send"),
    path("c/<int:pk>/settings/", views.conversation_update, name="update"),
    path("c/<int:pk>/delete/", views.conversation_delete, name="delete"),
    path("c/<int:pk>/export.<export_format:fmt>", views.conversation_export, name="export"),
    path("c/<int:pk>/m/<int:message_pk>/stream/", views.message_stream, name="stream"),
    path("c/<int:pk>/m/<int:message_pk>/stop/", views.message_stop, name="stop"),
    path("c/<int:pk>/m/<int:message_pk>/retry/", views.message_retry, name="retry"),
    path("c/<int:pk>/m/<int:message_pk>/continue/", views.message_continue, name="continue"),
    path("attachments/", views.attachment_upload, name="attachment_upload"),
    path("attachments/<int:pk>/discard/", views.attachment_discard, name="attachment_discard"),
    path("attachments/<int:pk>/file/", views.attachment_file, name="attachment_file"),
    path("attachments/<int:pk>/thumbnail/", views.attachment_thumbnail, name="attachment_thumbnail"),
    path("c/<int:pk>/m/<int:message_pk>/edit/", views.message_edit, name="edit"),
    path("c/<int:pk>/m/<int:message_pk>/switch/", views.branch_switch, name="switch"),
    path("c/<int:pk>/pin/", views.conversation_pin, name="pin"),
    path("c/<int:pk>/share/", views.share_create, name="share"),
    path("settings/shares/", views.share_list, name="shares"),
    path("settings/shares/<int:share_pk>/revoke/", views.share_revoke, name="share_revoke"),
    path("s/<str:token>/", views.share_view, name="shared"),
]
