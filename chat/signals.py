"""Signal receivers: files follow their rows; a session's start and end (the idle clock, open streams)."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.http import HttpRequest

from chat.middleware import LAST_SEEN_KEY
from chat.models import Attachment
from chat.streaming import end_session_streams

logger = logging.getLogger(__name__)


@receiver(post_delete, sender=Attachment, dispatch_uid="chat.attachment_file_delete")
def delete_attachment_file(sender: type[Attachment], instance: Attachment, **kwargs: Any) -> None:
    """When an Attachment row is deleted (directly, or by the cascade of its conversation, message or
    user), its file is deleted from storage once the transaction commits, unless another row (the same
    attachment on an edited question's branch) still uses it."""
    names = [f.name for f in (instance.file, instance.thumbnail) if f.name]
    storage = instance.file.storage

    def delete() -> None:
        # An edited question's new branch shares its attachments' files: keep a file another row still uses.
        shared = set(Attachment.objects.filter(file__in=names).values_list("file", flat=True)) | set(
            Attachment.objects.filter(thumbnail__in=names).values_list("thumbnail", flat=True)
        )
        for name in names:
            if name in shared:
                continue
            try:
                storage.delete(name)
            except Exception:  # storage briefly unavailable: the row is gone either way; log the orphan
                logger.exception("could not delete attachment file %s", name)

    # After commit: a rolled-back delete keeps its files.
    if names:
        transaction.on_commit(delete)


@receiver(user_logged_in, dispatch_uid="chat.idle_clock_starts_at_login")
def idle_clock_starts_at_login(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    """A login saves the session with a fresh expiry anyway: record that as its last renewal, so the
    requests of the next minute renew nothing (SessionIdleRenewalMiddleware)."""
    session = getattr(request, "session", None)
    if session is not None:
        session[LAST_SEEN_KEY] = int(time.time())


@receiver(user_logged_out, dispatch_uid="chat.end_streams_on_logout")
def end_streams_on_logout(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    """A logout ends that session's open event streams (every tab of that browser) with an `ended` event:
    the page must not go on showing a reply to someone who signed out. Other sessions of the same user
    keep theirs; the reply itself is still written to the end and saved. Django sends this signal before
    it flushes the session, so the key is still the one the streams subscribed with."""
    session_key = request.session.session_key if request is not None else None
    if session_key:
        end_session_streams(session_key=session_key, reason="logged_out")
