"""Every write to conversations and messages that a user's request makes. Keyword-only, typed, synchronous,
each with its async twin (`amessage_edit` beside `message_edit`) for the async views: the twin runs it on
the request database threads (`chat.streaming.db.request_db`: no new thread or SQLite connection per call;
on PostgreSQL the connection goes back to the pool after each call, so a request never pins one between
writes). A new conversation and Send have no twin: their views run the service and the reply's first
request together in one trip (`chat.views._commit_and_prepare`). The streaming engine's own writes
(saving partial text, leases, the final row) are in `chat.streaming.store`."""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Sum
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from chat import throttling
from chat.attachments import inspect_upload, make_thumbnail, safe_name
from chat.models import Attachment, Conversation, Message, Share
from chat.selectors import newest_leaf, start_state, transcript
from chat.streaming.db import request_db, start_db
from chat.streaming.store import lease_deadline
from chat.text import has_unstorable
from usage.budgets import check_can_start

TITLE_LENGTH = 60


class Keep(enum.Enum):
    """A setting left as it is (for arguments where None has a meaning of its own)."""

    KEEP = "keep"


KEEP = Keep.KEEP
logger = logging.getLogger(__name__)


def title_from_text(text: str) -> str:
    words = " ".join(text.split())
    if len(words) <= TITLE_LENGTH:
        return words
    return words[:TITLE_LENGTH].rsplit(" ", 1)[0].rstrip(" ,.;:") + "…"


def clean_message_text(text: str) -> str:
    """The text to save, or a ValidationError saying in plain words why not."""
    if not text or not text.strip():
        raise ValidationError("Type a message before sending.", code="empty")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ValidationError(
            f"That message is {len(text):,} characters long; the limit is {limit:,}.", code="too_long"
        )
    if has_unstorable(text):
        # Refused rather than altered: the user sees what is wrong, and nothing is saved.
        raise ValidationError(
            "That message contains a NUL character (U+0000) or an invalid character, which cannot be "
            "saved. Remove it and send again.",
            code="unstorable",
        )
    return text.strip("\r\n")


def max_output_tokens(model: str) -> int:
    """The output limit of `model` (CHAT_MODEL_MAX_OUTPUT_TOKENS, else CHAT_MAX_OUTPUT_TOKENS)."""
    return int(
        settings.CHAT_MODEL_MAX_OUTPUT_TOKENS.get(
            model or settings.CHAT_MODEL, settings.CHAT_MAX_OUTPUT_TOKENS
        )
    )


def clean_thinking_budget(budget: object, *, model: str = "") -> int | None:
    """A valid budget_tokens for extended thinking with `model` (empty: the site default), or None (off).
    The reply's max_tokens becomes CHAT_MAX_TOKENS + budget, so budget < max_tokens always holds; the sum
    must fit the model's output limit."""
    if budget is None or budget == 0:
        return None
    if not isinstance(budget, int) or budget not in settings.CHAT_THINKING_BUDGETS:
        raise ValidationError("Choose one of the offered thinking budgets.", code="thinking_budget")
    limit = max_output_tokens(model)
    if budget + settings.CHAT_MAX_TOKENS > limit:
        raise ValidationError(
            f"A thinking budget of {budget:,} tokens does not fit {model or settings.CHAT_MODEL}'s output "
            f"limit of {limit:,} tokens (with {settings.CHAT_MAX_TOKENS:,} for the answer). Choose a smaller "
            "budget or turn thinking off.",
            code="thinking_budget",
        )
    return budget


def conversation_create(
    *, user: User, title: str = "", model: str = "", system_prompt: str = ""
) -> Conversation:
    if model and model not in settings.CHAT_MODELS:
        raise ValidationError("Choose one of the offered models.", code="model")
    return Conversation.objects.create(user=user, title=title[:200], model=model, system_prompt=system_prompt)


def conversation_update(
    *,
    conversation: Conversation,
    title: str | None = None,
    model: str | None = None,
    system_prompt: str | None = None,
    thinking_budget: int | Keep | None = KEEP,
) -> Conversation:
    """Change the given settings; `thinking_budget` None turns extended thinking off (KEEP leaves it)."""
    fields = ["updated_at"]
    if title is not None:
        title = " ".join(title.split())
        if not title:
            raise ValidationError("A title cannot be empty.", code="empty")
        conversation.title = title[:200]
        fields.append("title")
    if model is not None:
        if model and model not in settings.CHAT_MODELS:
            raise ValidationError("Choose one of the offered models.", code="model")
        conversation.model = model
        fields.append("model")
    if system_prompt is not None:
        if has_unstorable(system_prompt):
            raise ValidationError("The system prompt contains a NUL or invalid character.", code="unstorable")
        conversation.system_prompt = system_prompt[: settings.CHAT_MAX_MESSAGE_CHARS]
        fields.append("system_prompt")
    if not isinstance(thinking_budget, Keep):
        conversation.thinking_budget = clean_thinking_budget(thinking_budget, model=conversation.model)
        fields.append("thinking_budget")
    elif model is not None and conversation.thinking_budget:  # the kept budget must fit the new model too
        clean_thinking_budget(conversation.thinking_budget, model=conversation.model)
    conversation.save(update_fields=fields)
    return conversation


def conversation_pin(*, conversation: Conversation, pinned: bool) -> Conversation:
    """Pin to (or unpin from) the top of the sidebar. Not an activity: `updated_at` stays."""
    Conversation.objects.filter(pk=conversation.pk).update(pinned=pinned)
    conversation.pinned = pinned
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> list[int]:
    """Delete the conversation; returns the replies that were streaming, whose viewers should be told.
    A running generation notices its row is gone at its next save and stops."""
    streaming = Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING)
    reply_ids = list(streaming.values_list("pk", flat=True))
    streaming.update(stop_requested=True)
    conversation.delete()
    return reply_ids


# --- Attachments ----------------------------------------------------------------------------------


def attachments_purge_pending(*, owner: User | None = None, older_than: timedelta | None = None) -> int:
    """Delete attachments uploaded but never sent (a chip left in a closed tab) once they are older than
    CHAT_ATTACHMENT_PENDING_HOURS; their files go with them (post_delete). Returns how many."""
    age = older_than if older_than is not None else timedelta(hours=settings.CHAT_ATTACHMENT_PENDING_HOURS)
    stale = Attachment.objects.filter(message__isnull=True, created_at__lt=timezone.now() - age)
    if owner is not None:
        stale = stale.filter(owner=owner)
    deleted, _ = stale.delete()
    return deleted


def attachment_create(*, owner: User, data: bytes, name: str) -> Attachment:
    """Check the bytes by content (ValidationError, and nothing stored, if refused), then store the file
    and its row. The attachment is pending until `message_send` attaches it to a message. The owner's
    stale pending uploads are purged on the way, so abandoned chips do not pile up."""
    attachments_purge_pending(owner=owner)
    inspected = inspect_upload(data, name)
    attachment = Attachment(
        owner=owner,
        kind=inspected.kind,
        media_type=inspected.media_type,
        original_name=safe_name(name),
        size=inspected.size,
        sha256=inspected.sha256,
        width=inspected.width,
        height=inspected.height,
        pages=inspected.pages,
    )
    try:
        attachment.file.save("upload", ContentFile(data), save=False)
        if inspected.kind == Attachment.Kind.IMAGE:
            attachment.thumbnail.save("thumb", ContentFile(make_thumbnail(data)), save=False)
        attachment.save()
    except BaseException:
        for stored in (attachment.file, attachment.thumbnail):  # no orphan file for a row that never was
            if stored.name:
                stored.storage.delete(stored.name)
        raise
    return attachment


def attachment_discard(*, owner: User, pk: int) -> bool:
    """Remove a pending (not yet sent) attachment of `owner`; its file goes with it (post_delete)."""
    deleted, _ = Attachment.objects.filter(pk=pk, owner=owner, message__isnull=True).delete()
    return bool(deleted)


def _claim_attachments(*, conversation: Conversation, ids: Sequence[int]) -> list[Attachment]:
    """The user's pending attachments `ids`, checked against the per-message and per-conversation limits."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    per_message = settings.CHAT_ATTACHMENTS_PER_MESSAGE
    if len(ids) > per_message:
        raise ValidationError(
            f"A message can carry at most {per_message} attachments; this one has {len(ids)}.",
            code="too_many_attachments",
        )
    found = list(
        Attachment.objects.select_for_update().filter(
            pk__in=ids, owner_id=conversation.user_id, message__isnull=True
        )
    )
    if len(found) != len(ids):
        raise ValidationError(
            "An attachment is no longer available (removed, or already sent). Attach it again.",
            code="attachment_gone",
        )
    limit = settings.CHAT_ATTACHMENTS_MAX_CONVERSATION_BYTES
    earlier = (
        Attachment.objects.filter(conversation=conversation, message__isnull=False).aggregate(t=Sum("size"))[
            "t"
        ]
        or 0
    )
    total = earlier + sum(a.size for a in found)
    if total > limit:
        raise ValidationError(
            f"This conversation's attachments would total {filesizeformat(total)}; the limit is "
            f"{filesizeformat(limit)} (every file is sent again on each turn). Start a new conversation "
            "for more files.",
            code="conversation_attachments_too_large",
        )
    by_id = {a.pk: a for a in found}
    return [by_id[pk] for pk in ids]


def share_create(*, conversation: Conversation) -> Share:
    """A read-only link to the conversation as it is now (the visible path, copied)."""
    path = transcript(conversation=conversation)
    if not path:
        raise ValidationError("There is nothing to share yet.", code="empty")
    snapshot = [
        {
            "role": m.role,
            "content": m.content,
            "blocks": m.blocks,
            "status": m.status,
            "error_message": m.error_message,
            "note": m.note,
            # Attachments are served to their owner only: the copy names them but does not include them.
            "attachments": [a.original_name for a in m.attachments.all()],
        }
        for m in path
    ]
    return Share.objects.create(
        conversation=conversation,
        token=secrets.token_urlsafe(32),
        title=conversation.title,
        snapshot=snapshot,
    )


def share_revoke(*, share: Share) -> Share:
    """The link stops working at once (404); the row stays, for the owner's list and staff."""
    if share.revoked_at is None:
        share.revoked_at = timezone.now()
        share.save(update_fields=["revoked_at"])
    return share


@dataclass(frozen=True)
class SentMessage:
    user_message: Message
    reply: Message
    # Did any budget apply to the user when the message was checked? (No: the page needs no notice.)
    budgeted: bool


def _lock_user(user_id: int) -> None:
    """Serialise everything that starts a generation for one user, so that the capacity and rate checks
    (read, then write) cannot both pass in two concurrent requests. The lock is on the user's row: a new
    conversation's own row would lock nothing anyone else waits on. On SQLite, IMMEDIATE transactions
    already serialise all writers (and Django runs a `select_for_update` there as a plain read: skipped).
    Always taken before any conversation row, so no two requests deadlock."""
    if connection.features.has_select_for_update:
        list(User.objects.select_for_update().filter(pk=user_id).values_list("pk", flat=True))


def _check_can_start(conversation: Conversation, *, new: bool = False) -> bool:
    """Call with the user's row locked (`_lock_user`). Refuses a start when the conversation is already
    generating, when the user has CHAT_MAX_CONCURRENT_PER_USER replies generating, or when a budget is used
    up; else says whether any budget applies. `new`: the conversation was created in this transaction, so
    nothing in it can be generating. One read (`selectors.start_state`), and the budgets' own only when
    some budget applies: concurrent sends of one user then check one after another, each seeing the
    replies the others started (see usage.budgets)."""
    state = start_state(user_id=conversation.user_id, conversation_id=None if new else conversation.pk)
    if state.conversation_busy:
        raise ValidationError(
            "Wait for the current reply to finish, or stop it, before sending.", code="busy"
        )
    limit = settings.CHAT_MAX_CONCURRENT_PER_USER
    if state.streaming >= limit:
        replies = "reply" if limit == 1 else "replies"
        raise ValidationError(
            f"You already have {limit} {replies} being written. Wait for one to finish, or stop one.",
            code="capacity",
        )
    return state.budgeted and check_can_start(user_id=conversation.user_id)


def _check_rate(conversation: Conversation) -> None:
    """The last check before a start is saved, since it counts: refuses the start when the user has started
    CHAT_MESSAGES_PER_MINUTE generations in the last minute, and counts it otherwise. A start that another
    check refused is never counted."""
    refusal = throttling.message_hit(user_id=conversation.user_id)
    if refusal is not None:
        raise ValidationError(
            f"You can send {refusal.limit} messages a minute. Nothing was sent; "
            f"try again in {refusal.wait_text}.",
            code="rate_limited",
            params={"retry_after": refusal.retry_after},
        )


def _new_reply(conversation: Conversation, *, parent: Message, also_save: Sequence[str] = ()) -> Message:
    """An empty streaming reply to `parent`, made the end of the visible path. `also_save`: conversation
    fields changed by the caller, saved in the same UPDATE."""
    reply = Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=conversation.model or settings.CHAT_MODEL,
        lease_expires_at=lease_deadline(),
    )
    # The id, not the instance: `reply` already points at `conversation`, and a pointer back would make the
    # pair a reference cycle, which outlives the request until a full garbage collection (chat.handlers).
    conversation.current_id = reply.pk
    conversation.save(update_fields=["current", "updated_at", *also_save])
    return reply


def _lock(conversation: Conversation, *, new: bool = False) -> Conversation:
    """Lock the conversation row (two concurrent writes cannot both pass the capacity check) and read
    its current path end afresh. `new`: created in this transaction, so only the user's row needs the
    lock (no other request can see the conversation yet) and it has no path."""
    _lock_user(conversation.user_id)  # always the user's row first, then the conversation's: no deadlock
    if new:
        return conversation
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if locked.current_id is None:  # rows written without the services: the newest one ends the path
        locked.current_id = (
            Message.objects.filter(conversation=conversation)
            .order_by("-pk")
            .values_list("pk", flat=True)
            .first()
        )
    conversation.current_id = locked.current_id
    return conversation


def _add_user_message(
    conversation: Conversation,
    *,
    text: str,
    parent_id: int | None,
    budgeted: bool,
    attachments: Sequence[Attachment] = (),
) -> SentMessage:
    user_message = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=text, parent_id=parent_id
    )
    if attachments:
        Attachment.objects.filter(pk__in=[a.pk for a in attachments]).update(
            conversation=conversation, message=user_message
        )
        for attachment in attachments:
            attachment.conversation, attachment.message = conversation, user_message
    user_message.remember_attachments(list(attachments))
    titled: list[str] = []
    if not conversation.title:
        conversation.title = title_from_text(text or ", ".join(a.original_name for a in attachments))
        titled.append("title")
    reply = _new_reply(conversation, parent=user_message, also_save=titled)
    return SentMessage(user_message=user_message, reply=reply, budgeted=budgeted)


@transaction.atomic
def message_send(*, conversation: Conversation, text: str, attachment_ids: Sequence[int] = ()) -> SentMessage:
    """Commit the user's text (and attach its pending attachments) and the empty reply row together,
    before any model is called; both go at the end of the visible path. With attachments, the text may be
    empty."""
    return _send(conversation, text=text, attachment_ids=attachment_ids)


def _send(
    conversation: Conversation, *, text: str, attachment_ids: Sequence[int], new: bool = False
) -> SentMessage:
    if not (attachment_ids and not text.strip()):
        text = clean_message_text(text)
    else:
        text = ""
    _lock(conversation, new=new)
    budgeted = _check_can_start(conversation, new=new)
    attachments = _claim_attachments(conversation=conversation, ids=attachment_ids)
    _check_rate(conversation)
    return _add_user_message(
        conversation,
        text=text,
        parent_id=conversation.current_id,
        budgeted=budgeted,
        attachments=attachments,
    )


@transaction.atomic
def message_edit(*, message: Message, text: str) -> SentMessage:
    """A sent question, edited: a new branch from that point (an alternative of `message`, with a new
    reply); the old branch is kept whole."""
    if message.role != Message.Role.USER:
        raise ValidationError("Only your own messages can be edited.", code="not_user")
    attachments = list(message.attachments.all())
    # As when sending: a question with attachments may have no text.
    text = "" if attachments and not text.strip() else clean_message_text(text)
    conversation = _lock(message.conversation)
    budgeted = _check_can_start(conversation)
    _check_rate(conversation)
    sent = _add_user_message(conversation, text=text, parent_id=message.parent_id, budgeted=budgeted)
    # The edited question keeps its attachments: new rows on the new message, the same stored files (the
    # old branch keeps its own rows; a file is deleted only with the last row using it).
    for attachment in attachments:
        attachment.pk = None
        attachment.message = sent.user_message
    Attachment.objects.bulk_create(attachments)
    sent.user_message.remember_attachments(attachments)  # as `_add_user_message` left it: in memory, current
    return sent


@transaction.atomic
def branch_switch(*, message: Message) -> Message:
    """Show the branch through `message` (one of several alternatives): the visible path now ends at the
    newest message below it. Returns that end."""
    conversation = _lock(message.conversation)
    leaf = newest_leaf(message=message)
    conversation.current_id = leaf.pk  # the id: no reference cycle (see `_new_reply`)
    conversation.save(update_fields=["current"])
    return leaf


@transaction.atomic
def conversation_start(
    *, user: User, text: str, model: str = "", attachment_ids: Sequence[int] = ()
) -> SentMessage:
    """A new conversation with its first message, or nothing at all if the message is refused."""
    conversation = conversation_create(user=user, model=model)
    return _send(conversation, text=text, attachment_ids=attachment_ids, new=True)


@transaction.atomic
def message_retry(*, reply: Message) -> Message:
    """Regenerate a finished or cut-off reply: a new alternative of it (same question), shown in its
    place. The old one is kept as a branch."""
    if reply.role != Message.Role.ASSISTANT or reply.parent_id is None:
        raise ValidationError("Only a reply can be regenerated.", code="not_reply")
    if reply.is_streaming:
        raise ValidationError("This reply is still being written.", code="busy")
    conversation = _lock(reply.conversation)
    _check_can_start(conversation)
    _check_rate(conversation)
    return _new_reply(conversation, parent=Message.objects.get(pk=reply.parent_id))


@transaction.atomic
def message_continue(*, reply: Message) -> Message:
    """Go on from a cut-off reply's partial text, in the same message (shown, if it was not)."""
    conversation = _lock(reply.conversation)
    if not reply.can_continue:
        raise ValidationError("Only a cut-off reply with some text can be continued.", code="not_cut_off")
    _check_can_start(conversation)
    _check_rate(conversation)
    # The Messages API rejects an assistant prefill that ends in whitespace; the model restores it.
    content = reply.content.rstrip()
    updated = Message.objects.filter(pk=reply.pk, status__in=Message.CUT_OFF).update(
        status=Message.Status.STREAMING,
        content=content,
        error_code="",
        error_message="",
        stop_reason="",
        note="",
        stop_requested=False,
        finished_at=None,
        lease_expires_at=lease_deadline(),
    )
    if not updated:  # someone else continued it first: never run two generations of one reply
        raise ValidationError("This reply is already being continued.", code="busy")
    conversation.current_id = newest_leaf(message=reply).pk  # the id: no reference cycle (see `_new_reply`)
    conversation.save(update_fields=["current", "updated_at"])
    reply.refresh_from_db()
    return reply


def message_request_stop(*, reply: Message) -> bool:
    """Ask the generating process (whichever it is) to stop; it also polls this flag as a fallback."""
    return bool(
        Message.objects.filter(pk=reply.pk, status=Message.Status.STREAMING).update(stop_requested=True)
    )


# --- Async twins, for the async views ---------------------------------------------------------------


async def amessage_edit(*, message: Message, text: str) -> SentMessage:
    return await start_db(message_edit)(message=message, text=text)


async def abranch_switch(*, message: Message) -> Message:
    return await request_db(branch_switch)(message=message)


async def amessage_retry(*, reply: Message) -> Message:
    return await start_db(message_retry)(reply=reply)


async def amessage_continue(*, reply: Message) -> Message:
    return await start_db(message_continue)(reply=reply)


async def amessage_request_stop(*, reply: Message) -> bool:
    return await request_db(message_request_stop)(reply=reply)


async def aattachment_create(*, owner: User, data: bytes, name: str) -> Attachment:
    return await request_db(attachment_create)(owner=owner, data=data, name=name)


async def aattachment_discard(*, owner: User, pk: int) -> bool:
    return await request_db(attachment_discard)(owner=owner, pk=pk)
