"""Read-only share links: a snapshot anyone with the link can read, until the owner revokes it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from chat import services
from chat.models import Attachment, Conversation, Message, Share
from tests.support.files import image_bytes

pytestmark = pytest.mark.django_db


def _conversation(user: User) -> Conversation:
    conversation = Conversation.objects.create(user=user, title="Trip to Lisbon")
    question = Message.objects.create(conversation=conversation, role="user", content="Where should I eat?")
    reply = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="Try **pastéis de nata** in Belém.",
        status="complete",
    )
    Conversation.objects.filter(pk=conversation.pk).update(current=reply)
    return Conversation.objects.get(pk=conversation.pk)


def _signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _share_url(page: str) -> str:
    match = re.search(r'value="https?://[^/"]+(/s/[^"]+/)"', page)
    assert match, "no share link on the settings page"
    return match.group(1)


def test_a_share_link_shows_a_snapshot_to_anyone_until_revoked(alice: User, bob: User) -> None:
    conversation = _conversation(alice)
    owner = _signed_in(alice)
    response = owner.post(f"/c/{conversation.pk}/share/")
    assert response.status_code == 302 and response["Location"] == "/settings/shares/"
    url = _share_url(owner.get("/settings/shares/").content.decode())
    token = url.removeprefix("/s/").strip("/")
    assert len(token) >= 40  # secrets.token_urlsafe(32)

    # Later messages stay out of the snapshot.
    Message.objects.create(conversation=conversation, role="user", content="A private follow-up")

    for reader in (Client(), _signed_in(bob)):  # anonymous, and another user
        page = reader.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert "<strong>pastéis de nata</strong>" in html and "Where should I eat?" in html
        assert "A private follow-up" not in html
        assert '<meta name="robots" content="noindex, nofollow">' in html
        assert page["X-Robots-Tag"] == "noindex, nofollow"
        assert page["Referrer-Policy"] == "no-referrer" and "no-store" in page["Cache-Control"]
        # No composer, no sidebar, nothing about the account that shared it.
        assert "composer" not in html and "conversation-list" not in html
        assert "alice" not in html and "csrf" not in html.lower()
        assert f"/c/{conversation.pk}/" not in html

    assert Client().post(f"/settings/shares/{Share.objects.get().pk}/revoke/").status_code == 302  # to login
    assert _signed_in(bob).post(f"/settings/shares/{Share.objects.get().pk}/revoke/").status_code == 404
    assert Client().get(url).status_code == 200  # neither of those revoked it

    owner.post(f"/settings/shares/{Share.objects.get().pk}/revoke/")
    assert Client().get(url).status_code == 404
    assert _signed_in(bob).get(url).status_code == 404
    assert "revoked" in owner.get("/settings/shares/").content.decode()


def test_unknown_tokens_are_404_and_an_empty_conversation_cannot_be_shared(alice: User, bob: User) -> None:
    assert Client().get("/s/not-a-real-token/").status_code == 404
    empty = Conversation.objects.create(user=alice, title="Empty")
    response = _signed_in(alice).post(f"/c/{empty.pk}/share/")
    assert response.status_code == 422 and "nothing to share" in response.content.decode()
    assert _signed_in(bob).post(f"/c/{_conversation(alice).pk}/share/").status_code == 404
    assert not Share.objects.exists()


def test_staff_see_shared_links_in_the_admin(alice: User) -> None:
    conversation = _conversation(alice)
    _signed_in(alice).post(f"/c/{conversation.pk}/share/")
    share = Share.objects.get()
    staff = User.objects.create_superuser("staff", password="x" * 20)
    admin = _signed_in(staff)
    listing = admin.get("/admin/chat/share/").content.decode()
    assert "Trip to Lisbon" in listing and "alice" in listing and f"/s/{share.token}/" in listing
    assert admin.get(f"/admin/chat/share/{share.pk}/change/").status_code == 200
    path = admin.get(f"/admin/chat/conversation/{conversation.pk}/change/").content.decode()
    assert "Visible path" in path and "#" in path and "Where should I eat?" in path


def test_a_shared_copy_names_attachments_but_never_serves_them(
    alice: User, settings: Any, tmp_path: Any
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    conversation = _conversation(alice)
    attachment = services.attachment_create(owner=alice, data=image_bytes(), name="harbour.png")
    Attachment.objects.filter(pk=attachment.pk).update(
        conversation=conversation, message=Message.objects.get(conversation=conversation, role="user")
    )
    _signed_in(alice).post(f"/c/{conversation.pk}/share/")
    html = Client().get(f"/s/{Share.objects.get().token}/").content.decode()
    assert "Attached: harbour.png (not included in this copy)" in html
    assert "/attachments/" not in html
    assert Client().get(f"/attachments/{attachment.pk}/file/").status_code in (302, 404)
