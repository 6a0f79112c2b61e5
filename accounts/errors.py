"""Refusals that carry a sentence for the person at the browser."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accounts.selectors import InviteState


class SignInRefused(Exception):
    """A sign-in that must not proceed. `message` is shown to the person as it stands; `code` names
    the cause for tests and logs. Deliberately not a SuspiciousOperation: mozilla-django-oidc swallows
    those inside `authenticate` and the reason would be lost."""

    def __init__(self, message: str, *, code: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class InviteUnavailable(Exception):
    """The invite link cannot make an account (used, expired or unknown); `state` says which."""

    def __init__(self, state: InviteState) -> None:
        super().__init__(str(state))
        self.state = state
