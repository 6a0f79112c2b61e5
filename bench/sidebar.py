"""How fast the sidebar is for a user with many conversations: first page, a deep page (keyset), a search.

    .venv/bin/python -m bench.sidebar --conversations 10000 [--messages 4] [--database-url postgres://...]

Creates a throwaway database (a temporary SQLite file unless --database-url names an empty PostgreSQL
database), fills it with one user's conversations, then times each query (median of --repeat runs, after a
warm-up) and prints the query plan of the first page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sidebar", description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=4, help="messages per conversation")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args(argv)

    data_dir = tempfile.mkdtemp(prefix="chatsite-sidebar-")
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{data_dir}/db.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    os.environ["REDIS_URL"] = ""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from chat.models import Conversation, Message
    from chat.selectors import conversation_page

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("many", password=None)
    other = User.objects.create_user("other", password=None)
    started = time.perf_counter()
    for owner, count in ((user, args.conversations), (other, args.conversations // 10)):
        conversations = Conversation.objects.bulk_create(
            [Conversation(user=owner, title=f"Conversation {i:06d}") for i in range(count)], batch_size=2000
        )
        Message.objects.bulk_create(
            [
                Message(
                    conversation=c,
                    role="user" if j % 2 == 0 else "assistant",
                    content=f"text {c.pk}-{j} " * 20,
                )
                for c in conversations
                for j in range(args.messages)
            ],
            batch_size=5000,
        )
    Conversation.objects.filter(
        user=user, pk__in=Conversation.objects.filter(user=user).values("pk")[:5]
    ).update(pinned=True)
    if connection.vendor == "postgresql":
        with connection.cursor() as db:
            db.execute("ANALYZE")
    elapsed = time.perf_counter() - started
    print(f"filled {args.conversations:,} conversations x {args.messages} messages in {elapsed:.1f} s")

    def timed(label: str, run: object) -> None:
        assert callable(run)
        run()  # warm-up
        samples = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            run()
            samples.append((time.perf_counter() - t0) * 1000)
        print(f"{label:<42} median {statistics.median(samples):7.2f} ms   max {max(samples):7.2f} ms")

    first = conversation_page(user=user)
    cursor = first.next_cursor or ""
    deep = ""
    for _ in range(100):  # page 100 of 200
        page = conversation_page(user=user, cursor=deep or cursor)
        deep = page.next_cursor or deep
    timed("first page (50)", lambda: conversation_page(user=user))
    timed("page 101 (keyset cursor)", lambda: conversation_page(user=user, cursor=deep))
    timed(
        "search title+messages, 'Conversation 00999'",
        lambda: conversation_page(user=user, query="Conversation 00999"),
    )
    timed("search message text, 'text 5000-1 '", lambda: conversation_page(user=user, query="text 5000-1 "))
    timed("search with no match", lambda: conversation_page(user=user, query="zzzz-no-match"))
    qs = Conversation.objects.filter(user=user).order_by("-pinned", "-updated_at", "-id")[:51]
    print("plan of the first page:\n" + qs.explain())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
