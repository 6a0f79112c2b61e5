from typing import Any

from django.conf import settings
from django.http import HttpRequest

from chat.providers import is_demo_mode


def chat_settings(request: HttpRequest) -> dict[str, Any]:
    return {
        "demo_mode": is_demo_mode(),
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "chat_models": settings.CHAT_MODELS,
        "default_model": settings.CHAT_MODEL,
        # The page reopens a stream that sent nothing, not even a heartbeat, for 1.75 of these.
        "stream_heartbeat_seconds": settings.CHAT_KEEPALIVE_SECONDS,
    }
