"""Database side of the bench, run inside the app's Django settings (same environment as the server).

``setup``: migrate, install the write-counting triggers, create bench users and a signed-in session for each
(by ``django.contrib.auth.login`` in this process, not through the login page, so that 1000 sign-ins do not
spend minutes of server CPU on password hashing that the bench is not about).

``check``: for given reply ids: status, SHA-256 of the saved content, tokens, timings, and the number of
INSERT/UPDATE row writes the triggers counted on ``chat_message`` for each reply.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

SQLITE_TRIGGERS = [
    "CREATE TABLE IF NOT EXISTS bench_msg_writes (message_id INTEGER NOT NULL, op TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS bench_msg_writes_id ON bench_msg_writes (message_id)",
    "CREATE TRIGGER IF NOT EXISTS bench_msg_ins AFTER INSERT ON chat_message "
    "BEGIN INSERT INTO bench_msg_writes VALUES (NEW.id, 'I'); END",
    "CREATE TRIGGER IF NOT EXISTS bench_msg_upd AFTER UPDATE ON chat_message "
    "BEGIN INSERT INTO bench_msg_writes VALUES (NEW.id, 'U'); END",
]
POSTGRES_TRIGGERS = [
    "CREATE TABLE IF NOT EXISTS bench_msg_writes (message_id bigint NOT NULL, op char(1) NOT NULL)",
    "CREATE INDEX IF NOT EXISTS bench_msg_writes_id ON bench_msg_writes (message_id)",
    "CREATE OR REPLACE FUNCTION bench_count_msg_write() RETURNS trigger AS $$ BEGIN "
    "INSERT INTO bench_msg_writes VALUES (NEW.id, left(TG_OP, 1)); RETURN NULL; END $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS bench_msg_write ON chat_message",
    "CREATE TRIGGER bench_msg_write AFTER INSERT OR UPDATE ON chat_message "
    "FOR EACH ROW EXECUTE FUNCTION bench_count_msg_write()",
]


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()


def migrate() -> None:
    """Migrate and (re)install the write-counting triggers; idempotent, so it runs before every app server
    start (the code under test may gain migrations while a sweep runs)."""
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", interactive=False, verbosity=0)
    # The app runs with DEBUG off, as in production: its static files need their manifest.
    call_command("collectstatic", interactive=False, verbosity=0)
    statements = SQLITE_TRIGGERS if connection.vendor == "sqlite" else POSTGRES_TRIGGERS
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def setup(users: int) -> list[str]:
    migrate()
    return signed_in_sessions(users)


def signed_in_sessions(users: int) -> list[str]:
    """Bench users `bench00000`... (created if missing, with unusable passwords) and, for each, a new
    session signed in by `django.contrib.auth.login` itself: the app's `user_logged_in` receivers run (the
    idle clock starts at the login, so the user's first requests renew nothing, as after a real sign-in),
    then the session is saved as SessionMiddleware saves it. Returns the session keys, in user order.

    Why the real `login`: sessions written by hand without the idle clock made every bench start a
    session renewal (a save on a database thread, ~0.9 ms of CPU per start in the flow, measured in
    session 14), which a signed-in user's message costs at most once a minute."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import login
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.test import RequestFactory

    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    names = [f"bench{i:05d}" for i in range(users)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    User.objects.bulk_create(
        [User(username=name, password=make_password(None)) for name in names if name not in existing]
    )
    keys: list[str] = []
    factory = RequestFactory()
    with transaction.atomic():
        for user in User.objects.filter(username__in=names).order_by("username"):
            request = factory.get("/")
            request.session = store_class()
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            request.session.save()
            assert request.session.session_key is not None
            keys.append(request.session.session_key)
    return keys


def check(ids: list[int]) -> dict[str, dict[str, Any]]:
    from django.db import connection

    from chat.models import Message

    out: dict[str, dict[str, Any]] = {}
    rows = Message.objects.filter(pk__in=ids).values(
        "pk", "content", "status", "output_tokens", "ttft_ms", "duration_ms"
    )
    for row in rows:
        content = row["content"]
        out[str(row["pk"])] = {
            "status": row["status"],
            "output_tokens": row["output_tokens"],
            "ttft_ms": row["ttft_ms"],
            "duration_ms": row["duration_ms"],
            "sha256": hashlib.sha256(content.encode()).hexdigest(),
            "chars": len(content),
            "writes": 0,
        }
    if ids:
        with connection.cursor() as cursor:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join(["%s"] * len(part))
                cursor.execute(
                    f"SELECT message_id, COUNT(*) FROM bench_msg_writes WHERE message_id IN ({marks}) "
                    "GROUP BY message_id",
                    part,
                )
                for message_id, count in cursor.fetchall():
                    if str(message_id) in out:
                        out[str(message_id)]["writes"] = int(count)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dbtool", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_setup = sub.add_parser("setup")
    p_setup.add_argument("--users", type=int, required=True)
    p_setup.add_argument("--out", required=True, help="JSON file: list of session keys")
    sub.add_parser("migrate")
    p_check = sub.add_parser("check")
    p_check.add_argument("--ids", required=True, help="JSON file: list of reply ids")
    p_check.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    _setup_django()
    if args.command == "migrate":
        migrate()
    elif args.command == "setup":
        Path(args.out).write_text(json.dumps(setup(args.users)))
    else:
        Path(args.out).write_text(json.dumps(check(json.loads(Path(args.ids).read_text()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
