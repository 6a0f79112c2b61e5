"""Attachments: checked by content (every refusal, and nothing stored from one), stored through Django's
storage API, served only to their owner and staff, deleted with their conversation, shown and exported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from chat import selectors, services
from chat.attachments import inspect_upload
from chat.models import Attachment, Conversation, Message
from chat.streaming import prepare_reply
from tests.support.files import image_bytes, pdf_bytes, png_header_only, truncated

# --- The content check (a pure function of the bytes, the name and the settings) ----------------------


@pytest.mark.parametrize(
    ("fmt", "name", "media_type"),
    [
        ("PNG", "shot.png", "image/png"),
        ("JPEG", "photo.jpg", "image/jpeg"),
        ("JPEG", "photo.JPEG", "image/jpeg"),
        ("GIF", "anim.gif", "image/gif"),
        ("WEBP", "pic.webp", "image/webp"),
        ("PNG", "no-extension", "image/png"),
    ],
)
def test_images_are_recognised_by_content(fmt: str, name: str, media_type: str) -> None:
    found = inspect_upload(image_bytes(fmt, (64, 48)), name)
    assert (found.kind, found.media_type, found.width, found.height) == ("image", media_type, 64, 48)
    assert len(found.sha256) == 64


def test_a_pdf_is_recognised_with_its_page_count() -> None:
    found = inspect_upload(pdf_bytes(3), "report.pdf")
    assert (found.kind, found.media_type, found.pages) == ("pdf", "application/pdf", 3)


REFUSALS: list[tuple[str, Any, str, str, dict[str, Any]]] = [
    # (case, bytes or a maker, file name, error code, settings)
    ("empty", b"", "a.png", "empty", {}),
    (
        "too large",
        lambda: image_bytes("PNG", (64, 48)),
        "a.png",
        "too_large",
        {"CHAT_ATTACHMENT_MAX_BYTES": 100},
    ),
    ("text", b"just some text, not an image\n", "notes.txt", "unsupported", {}),
    ("text named .png", b"just some text, not an image\n", "notes.png", "disguised", {}),
    ("pdf named .png", lambda: pdf_bytes(1), "screenshot.png", "disguised", {}),
    ("png named .pdf", lambda: image_bytes("PNG"), "paper.pdf", "disguised", {}),
    ("jpeg named .gif", lambda: image_bytes("JPEG"), "anim.gif", "disguised", {}),
    ("bmp (unsupported image)", lambda: image_bytes("BMP"), "old.bmp", "unsupported", {}),
    ("truncated png", lambda: truncated(image_bytes("PNG", (400, 300), "#123456")), "a.png", "corrupt", {}),
    ("truncated jpeg", lambda: truncated(image_bytes("JPEG", (400, 300)), 0.5), "a.jpg", "corrupt", {}),
    (
        "too many pixels",
        lambda: image_bytes("PNG", (40, 30)),
        "a.png",
        "too_many_pixels",
        {"CHAT_ATTACHMENT_MAX_PIXELS": 1000},
    ),
    ("side too long", lambda: png_header_only(9000, 10), "wide.png", "too_many_pixels", {}),
    ("pixel count from the header", lambda: png_header_only(6000, 5000), "big.png", "too_many_pixels", {}),
    ("bomb header", lambda: png_header_only(60000, 60000), "bomb.png", "bomb", {}),
    (
        "bomb past pillow's own guard",
        lambda: png_header_only(20000, 20000),
        "bomb.png",
        "bomb",
        {"CHAT_ATTACHMENT_MAX_PIXELS": 10**12, "CHAT_ATTACHMENT_MAX_SIDE": 10**6},
    ),
    ("corrupt pdf", b"%PDF-1.7\n1 0 obj garbage\n%%EOF", "a.pdf", "corrupt", {}),
    ("truncated pdf", lambda: truncated(pdf_bytes(2), 0.4), "a.pdf", "corrupt", {}),
    ("too many pages", lambda: pdf_bytes(3), "long.pdf", "too_many_pages", {"CHAT_ATTACHMENT_MAX_PAGES": 2}),
    ("encrypted pdf", lambda: pdf_bytes(1, password="secret"), "locked.pdf", "encrypted", {}),
]


def _data(value: Any) -> bytes:
    return value() if callable(value) else value


@pytest.mark.parametrize(
    ("case", "data", "name", "code", "overrides"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_every_refusal_has_its_code_and_names_the_file(
    settings: Any, case: str, data: Any, name: str, code: str, overrides: dict[str, Any]
) -> None:
    for key, value in overrides.items():
        setattr(settings, key, value)
    with pytest.raises(ValidationError) as refused:
        inspect_upload(_data(data), name)
    assert refused.value.code == code, refused.value.messages
    assert name in refused.value.messages[0]


def test_disguised_messages_say_what_the_file_really_is() -> None:
    with pytest.raises(ValidationError, match=r"named like a PNG image but is really a PDF document"):
        inspect_upload(pdf_bytes(1), "screenshot.png")
    with pytest.raises(ValidationError, match=r"named like a PNG image but is not one"):
        inspect_upload(b"hello", "notes.png")


# --- The upload endpoint: refusals store nothing ------------------------------------------------------


def _files(location: Path) -> list[Path]:
    return [p for p in location.rglob("*") if p.is_file()] if location.exists() else []


def _upload(client: Client, data: bytes, name: str) -> Any:
    return client.post(
        "/attachments/", {"file": SimpleUploadedFile(name, data, "image/png")}, headers={"HX-Request": "true"}
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "data", "name", "code", "overrides"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_a_refused_upload_says_why_and_stores_nothing(
    client: Client,
    alice: User,
    settings: Any,
    attachments_dir: Path,
    case: str,
    data: Any,
    name: str,
    code: str,
    overrides: dict[str, Any],
) -> None:
    for key, value in overrides.items():
        setattr(settings, key, value)
    client.force_login(alice)
    response = _upload(client, _data(data), name)
    assert response.status_code == 422
    body = response.content.decode()
    assert 'id="composer-error"' in body and name in body
    assert response["HX-Retarget"] == "#composer-error"
    assert Attachment.objects.count() == 0
    assert _files(attachments_dir) == []


@pytest.mark.django_db
def test_an_accepted_upload_is_stored_privately_and_answers_a_chip(
    client: Client, alice: User, attachments_dir: Path
) -> None:
    client.force_login(alice)
    data = image_bytes("PNG", (64, 48))
    response = _upload(client, data, "../../etc/Screen shot.png")
    assert response.status_code == 200
    attachment = Attachment.objects.get()
    assert (attachment.owner, attachment.message, attachment.conversation) == (alice, None, None)
    assert attachment.original_name == "Screen shot.png"  # no path from the client survives
    body = response.content.decode()
    assert f'name="attachment" value="{attachment.pk}"' in body
    assert f"/attachments/{attachment.pk}/file/" in body
    stored = {p.name: p for p in _files(attachments_dir)}
    assert set(stored) == {Path(str(attachment.file.name)).name, Path(str(attachment.thumbnail.name)).name}
    original = stored[Path(str(attachment.file.name)).name]
    assert original.read_bytes() == data
    assert "Screen" not in original.name and original.suffix == ".png"  # a random name, by content type
    with Image.open(stored[Path(str(attachment.thumbnail.name)).name]) as thumb:
        assert (thumb.format, thumb.size) == ("WEBP", (64, 48))  # never larger than the original


@pytest.mark.django_db
def test_an_oversized_body_is_refused_before_it_is_parsed(client: Client, alice: User, settings: Any) -> None:
    settings.CHAT_ATTACHMENT_MAX_BYTES = 1000
    client.force_login(alice)
    big = b"\x00" * 200_000
    response = _upload(client, big, "big.png")
    assert response.status_code == 422 and "the limit is 1000" in response.content.decode()
    assert Attachment.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_stale_pending_uploads_are_purged_with_their_files(
    alice: User, bob: User, attachments_dir: Path
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    old, fresh, theirs = _attach(alice), _attach(alice), _attach(bob)
    sent = _attach(alice)
    conversation = services.conversation_create(user=alice)
    services.message_send(conversation=conversation, text="x", attachment_ids=[sent.pk])
    long_ago = timezone.now() - timedelta(hours=25)
    Attachment.objects.filter(pk__in=[old.pk, theirs.pk, sent.pk]).update(created_at=long_ago)
    _attach(alice)  # an upload purges the uploader's own stale pending ones
    remaining = set(Attachment.objects.values_list("pk", flat=True))
    assert old.pk not in remaining and {fresh.pk, theirs.pk, sent.pk} <= remaining
    assert services.attachments_purge_pending() == 1  # the site-wide sweep takes bob's
    assert len(_files(attachments_dir)) == 3 * 2  # fresh, sent, and the new one, each with its preview


@pytest.mark.django_db
def test_a_missing_file_gets_a_clear_error(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post("/attachments/", {}, headers={"HX-Request": "true"})
    assert response.status_code == 422 and "Choose a file" in response.content.decode()


# --- Sending, serving, deleting --------------------------------------------------------------------------


def _attach(user: User, data: bytes | None = None, name: str = "a.png") -> Attachment:
    return services.attachment_create(owner=user, data=data or image_bytes(), name=name)


@pytest.mark.django_db
def test_sending_claims_the_attachments_and_refuses_someone_elses(alice: User, bob: User) -> None:
    mine, theirs = _attach(alice), _attach(bob)
    conversation = services.conversation_create(user=alice)
    with pytest.raises(ValidationError) as refused:
        services.message_send(conversation=conversation, text="look", attachment_ids=[theirs.pk])
    assert refused.value.code == "attachment_gone"
    assert not Message.objects.filter(conversation=conversation).exists()  # nothing saved
    sent = services.message_send(conversation=conversation, text="", attachment_ids=[mine.pk])
    mine.refresh_from_db()
    assert (mine.message, mine.conversation) == (sent.user_message, conversation)
    assert sent.user_message.content == "" and conversation.title == "a.png"
    with pytest.raises(ValidationError):  # already sent: cannot be claimed twice
        services.message_send(conversation=conversation, text="again", attachment_ids=[mine.pk])


@pytest.mark.django_db
def test_a_new_conversations_first_request_and_page_are_built_from_what_was_written(
    alice: User, django_assert_num_queries: Any
) -> None:
    """A new conversation's reply starts from the rows its service just wrote (`prepare_reply(ancestors=)`,
    the page's `fresh_path`): the same request as one read back from the database, and no query for it."""
    image, pdf = _attach(alice), _attach(alice, pdf_bytes(), "notes.pdf")
    sent = services.conversation_start(user=alice, text="Compare these", attachment_ids=[image.pk, pdf.pk])
    with django_assert_num_queries(0):
        from_memory = prepare_reply(sent.reply, ancestors=[sent.user_message])
        shown = [a.pk for a in selectors.fresh_path([sent.user_message])[0].attachments.all()]
    read_back = prepare_reply(Message.objects.select_related("conversation").get(pk=sent.reply.pk))
    assert from_memory == read_back and shown == [image.pk, pdf.pk]
    assert [block["type"] for block in from_memory.request.messages[0]["content"]] == [
        "image",
        "document",
        "text",
    ]


@pytest.mark.django_db
def test_per_message_and_per_conversation_limits(alice: User, settings: Any) -> None:
    settings.CHAT_ATTACHMENTS_PER_MESSAGE = 2
    conversation = services.conversation_create(user=alice)
    three = [_attach(alice).pk for _ in range(3)]
    with pytest.raises(ValidationError, match="at most 2 attachments"):
        services.message_send(conversation=conversation, text="x", attachment_ids=three)
    size = Attachment.objects.get(pk=three[0]).size
    settings.CHAT_ATTACHMENTS_MAX_CONVERSATION_BYTES = size * 2
    services.message_send(conversation=conversation, text="x", attachment_ids=three[:2])
    Message.objects.filter(status="streaming").update(status="complete")
    with pytest.raises(ValidationError, match="would total"):
        services.message_send(conversation=conversation, text="y", attachment_ids=three[2:])


@pytest.mark.django_db
def test_files_are_served_to_owner_and_staff_only_with_safe_headers(
    client: Client, alice: User, bob: User
) -> None:
    image = _attach(alice, image_bytes("PNG"), 'shot "1".png')
    pdf = _attach(alice, pdf_bytes(2), "paper.pdf")
    client.force_login(alice)
    response = client.get(f"/attachments/{image.pk}/file/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("inline;")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"].startswith("private")
    assert b"".join(response.streaming_content) == image.file.open("rb").read()  # type: ignore[attr-defined]
    response = client.get(f"/attachments/{pdf.pk}/file/")
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="paper.pdf"'
    preview = client.get(f"/attachments/{image.pk}/thumbnail/")
    assert preview.status_code == 200 and preview["Content-Type"] == "image/webp"
    assert preview["X-Content-Type-Options"] == "nosniff"
    assert client.get(f"/attachments/{pdf.pk}/thumbnail/").status_code == 404  # PDFs have none
    client.force_login(bob)
    assert client.get(f"/attachments/{image.pk}/file/").status_code == 404
    assert client.get(f"/attachments/{image.pk}/thumbnail/").status_code == 404
    assert client.post(f"/attachments/{image.pk}/discard/").status_code == 200  # a no-op for bob
    assert Attachment.objects.filter(pk=image.pk).exists()
    bob.is_staff = True
    bob.save()
    assert client.get(f"/attachments/{image.pk}/file/").status_code == 200
    client.logout()
    assert client.get(f"/attachments/{image.pk}/file/").status_code == 302  # to the login page


@pytest.mark.django_db
def test_no_public_url_serves_the_files(client: Client, alice: User, attachments_dir: Path) -> None:
    attachment = _attach(alice)
    for url in (
        f"/media/{attachment.file.name}",
        f"/static/{attachment.file.name}",
        f"/{attachment.file.name}",
    ):
        assert client.get(url).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_deleting_a_conversation_deletes_its_files(
    client: Client, alice: User, attachments_dir: Path
) -> None:
    conversation = services.conversation_create(user=alice)
    sent = [_attach(alice).pk, _attach(alice, pdf_bytes(1), "p.pdf").pk]
    services.message_send(conversation=conversation, text="two files", attachment_ids=sent)
    pending = _attach(alice)  # not sent: stays
    assert len(_files(attachments_dir)) == 5  # two images with their previews, and a PDF
    Message.objects.filter(status="streaming").update(status="complete")
    client.force_login(alice)
    assert client.post(f"/c/{conversation.pk}/delete/").status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert list(Attachment.objects.values_list("pk", flat=True)) == [pending.pk]
    assert sorted(p.name for p in _files(attachments_dir)) == sorted(
        Path(str(f.name)).name for f in (pending.file, pending.thumbnail)
    )


@pytest.mark.django_db(transaction=True)
def test_an_edited_question_keeps_its_attachments_and_files_live_until_their_last_row(
    alice: User, attachments_dir: Path
) -> None:
    conversation = services.conversation_create(user=alice)
    image = _attach(alice)
    first = services.message_send(conversation=conversation, text="what is this?", attachment_ids=[image.pk])
    Message.objects.filter(status="streaming").update(status="complete")
    edited = services.message_edit(message=first.user_message, text="")  # attachments alone may go
    copy = edited.user_message.attachments.get()
    assert edited.user_message.content == "" and edited.user_message.parent_id == first.user_message.parent_id
    assert (copy.file.name, copy.thumbnail.name) == (image.file.name, image.thumbnail.name)
    assert first.user_message.attachments.get().pk == image.pk != copy.pk  # the old branch keeps its own row
    files = sorted(_files(attachments_dir))
    Attachment.objects.filter(pk=image.pk).delete()  # one row gone: the other still shows the file
    assert sorted(_files(attachments_dir)) == files
    Conversation.objects.filter(pk=conversation.pk).delete()  # the last row gone: the files go with it
    assert _files(attachments_dir) == []


@pytest.mark.django_db(transaction=True)
def test_removing_a_pending_chip_deletes_its_file(client: Client, alice: User, attachments_dir: Path) -> None:
    attachment = _attach(alice)
    client.force_login(alice)
    assert client.post(f"/attachments/{attachment.pk}/discard/").status_code == 200
    assert not Attachment.objects.exists() and _files(attachments_dir) == []


@pytest.mark.django_db
def test_transcript_admin_and_exports_show_the_attachments(client: Client, alice: User) -> None:
    conversation = services.conversation_create(user=alice)
    image, pdf = (
        _attach(alice, image_bytes("PNG", (64, 48)), "chart.png"),
        _attach(alice, pdf_bytes(2), "paper.pdf"),
    )
    services.message_send(conversation=conversation, text="see these", attachment_ids=[image.pk, pdf.pk])
    client.force_login(alice)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert f'<img src="/attachments/{image.pk}/thumbnail/" alt="chart.png" width="64" height="48"' in page
    assert f'href="/attachments/{image.pk}/file/"' in page
    assert "paper.pdf" in page and "PDF · 2 pages" in page
    exported = json.loads(client.get(f"/c/{conversation.pk}/export.json").content)
    listed = exported["messages"][0]["attachments"]
    assert [(a["name"], a["media_type"]) for a in listed] == [
        ("chart.png", "image/png"),
        ("paper.pdf", "application/pdf"),
    ]
    assert listed[0]["width"] == 64 and listed[1]["pages"] == 2 and len(listed[0]["sha256"]) == 64
    markdown = client.get(f"/c/{conversation.pk}/export.md").content.decode()
    assert "chart.png" in markdown and "paper.pdf" in markdown
    admin = User.objects.create_superuser("root", password="pw-pw-pw-pw")
    client.force_login(admin)
    change = client.get(f"/admin/chat/conversation/{conversation.pk}/change/").content.decode()
    assert f"/attachments/{image.pk}/file/" in change and "paper.pdf" in change
    listing = client.get("/admin/chat/attachment/").content.decode()
    assert "chart.png" in listing and "paper.pdf" in listing


def test_s3_storage_is_configured_from_the_environment() -> None:
    """The S3 path is configuration only here (no S3 endpoint to test against): check what it configures."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "ATTACHMENTS_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": "chat-files",
        "AWS_S3_ENDPOINT_URL": "https://minio.example.com",
    }
    code = (
        "import json; from django.conf import settings; print(json.dumps(settings.STORAGES['attachments']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    configured = json.loads(result.stdout)
    assert configured["BACKEND"] == "storages.backends.s3.S3Storage"
    options = configured["OPTIONS"]
    assert options["bucket_name"] == "chat-files" and options["endpoint_url"] == "https://minio.example.com"
    assert options["default_acl"] == "private" and options["file_overwrite"] is False
