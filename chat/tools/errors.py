"""The one exception a tool raises to answer the model with an error (kept free of Django imports, so the
tool sandbox's child process can raise it without setting Django up)."""

from __future__ import annotations


class ToolError(Exception):
    """A failure to report back to the model as `is_error` with this text."""
