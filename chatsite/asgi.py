"""ASGI entry point: channels' ProtocolTypeRouter in front of Django's async handler."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from chat.lifecycle import with_background_tasks  # noqa: E402

application = ProtocolTypeRouter({"http": with_background_tasks(django_asgi_app)})
