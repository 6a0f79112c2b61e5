"""A production-like server process for attacker tests: DEBUG left at its default, a real secret key,
static files collected, and daphne started the way the README's production commands start it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tests.support.live_server import DaphneProcess, manage

PASSWORD = "correct horse battery staple"


def production_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a deploy that set only what the README says it must. DEBUG is *not* set: its
    default is what is under test. Plain HTTP on loopback stands in for TLS at nginx."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CHAT_", "ANTHROPIC_", "DATABASE_", "REDIS_", "SECURE_", "LOGIN_"))
        and k not in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "STATIC_ROOT", "DATA_DIR")
    }
    return {
        **inherited,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATA_DIR": str(data_dir),
        "STATIC_ROOT": str(data_dir / "static"),
        "SECURE_SSL_REDIRECT": "False",  # nginx redirects; these tests speak plain HTTP to daphne
        "SESSION_COOKIE_SECURE": "False",
        "CSRF_COOKIE_SECURE": "False",
        "CHAT_PROVIDER": "demo",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


def start_edge_server(env: dict[str, str], log_dir: Path, name: str, *users: str) -> DaphneProcess:
    """Migrate, collect static files, create `users` (password PASSWORD), then start daphne with
    --proxy-headers, as in the README."""
    manage(env, "migrate", "--noinput", "-v", "0")
    if not (Path(env["STATIC_ROOT"]) / "staticfiles.json").exists():  # collected once, shared by servers
        manage(env, "collectstatic", "--noinput", "-v", "0")
    if users:
        names = ", ".join(repr(u) for u in users)
        manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth.models import User\n"
            f"for name in [{names}]: User.objects.create_user(name, password={PASSWORD!r})",
        )
    return DaphneProcess(env, log_dir, name, args=("--proxy-headers",)).start()
