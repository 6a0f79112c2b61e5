"""The SQLite backend's writer lock (chatsite/sqlite3): threads of one process that write take turns on a
lock, released the moment a transaction ends however it ends, and a writer that cannot get it in time fails
as SQLite would ("database is locked") and changes nothing.

Each test uses its own database file through its own connection handler, so it runs the same whatever the
suite's default database is (SQLite or PostgreSQL), and no test transaction holds the lock meanwhile."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import ConnectionHandler, OperationalError

from chatsite.sqlite3.base import writer_lock


@pytest.fixture
def handler(tmp_path: Path, django_db_blocker: Any) -> Iterator[ConnectionHandler]:
    """`connections` with an extra alias "w": a database file of this test's own (the lock is per file).
    No test database and no test transaction: the default database is not touched."""
    configured = connections.configure_settings(
        {
            "default": connections.settings["default"],
            "w": {
                "ENGINE": "chatsite.sqlite3",
                "NAME": str(tmp_path / "w.sqlite3"),
                "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 0.3},
            },
        }
    )
    connections.settings["w"] = configured["w"]
    django_db_blocker.unblock()
    try:
        with connections["w"].cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)")
        yield connections
    finally:
        connections["w"].close()
        del connections.settings["w"]
        del connections["w"]
        django_db_blocker.restore()


def _in_thread(handler: ConnectionHandler, work: Callable[[BaseDatabaseWrapper], object]) -> threading.Thread:
    def run() -> None:
        try:
            work(handler["w"])
        finally:
            handler["w"].close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@contextlib.contextmanager
def _writing(connection: BaseDatabaseWrapper, opened: threading.Event) -> Iterator[None]:
    """A write transaction holding row 'a', open (and the writer lock held) for the body of the `with`;
    `opened` is set once the row is written."""
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO t (who) VALUES ('a')")
        opened.set()
        yield


def _rows(handler: ConnectionHandler) -> list[str]:
    with handler["w"].cursor() as cursor:
        cursor.execute("SELECT who FROM t ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def test_a_writer_waits_for_the_open_write_transaction_and_then_writes(handler: ConnectionHandler) -> None:
    events: list[str] = []
    a_open, b_started = threading.Event(), threading.Event()

    def a(connection: BaseDatabaseWrapper) -> None:
        with _writing(connection, a_open):
            b_started.wait(5)
            events.append("a commits")
        events.append("a committed")

    def b(connection: BaseDatabaseWrapper) -> None:
        a_open.wait(5)
        b_started.set()
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            events.append("b writes")
            cursor.execute("INSERT INTO t (who) VALUES ('b')")

    threads = [_in_thread(handler, a), _in_thread(handler, b)]
    for thread in threads:
        thread.join(10)
    assert events == ["a commits", "a committed", "b writes"]
    assert _rows(handler) == ["a", "b"]


def test_an_autocommit_write_waits_its_turn_too(handler: ConnectionHandler) -> None:
    events: list[str] = []
    a_open = threading.Event()

    def a(connection: BaseDatabaseWrapper) -> None:
        with _writing(connection, a_open):
            lock = writer_lock(connection.settings_dict["NAME"])
            assert lock.locked()  # held from BEGIN to the end of the transaction
            events.append("a commits")

    def b(connection: BaseDatabaseWrapper) -> None:
        a_open.wait(5)
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO t (who) VALUES ('b')")  # no transaction: autocommit
        events.append("b wrote")

    threads = [_in_thread(handler, a), _in_thread(handler, b)]
    for thread in threads:
        thread.join(10)
    assert events == ["a commits", "b wrote"]
    assert _rows(handler) == ["a", "b"]


def test_a_writer_that_waits_past_the_timeout_fails_as_sqlite_would_and_changes_nothing(
    handler: ConnectionHandler,
) -> None:
    outcome: list[str] = []
    a_open, b_done = threading.Event(), threading.Event()

    def a(connection: BaseDatabaseWrapper) -> None:
        with _writing(connection, a_open):
            b_done.wait(5)  # held past b's timeout (0.3 s)

    def b(connection: BaseDatabaseWrapper) -> None:
        a_open.wait(5)
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute("INSERT INTO t (who) VALUES ('b')")
        except OperationalError as error:
            outcome.append(str(error))
        try:
            with connection.cursor() as cursor:
                cursor.execute("UPDATE t SET who = 'b' WHERE who = 'a'")
        except OperationalError as error:
            outcome.append(str(error))
        b_done.set()

    threads = [_in_thread(handler, a), _in_thread(handler, b)]
    for thread in threads:
        thread.join(10)
    assert outcome == ["database is locked", "database is locked"]
    assert _rows(handler) == ["a"]
    assert not writer_lock(handler["w"].settings_dict["NAME"]).locked()


@pytest.mark.parametrize("ending", ["rollback", "error", "close"])
def test_the_lock_is_released_however_the_transaction_ends(handler: ConnectionHandler, ending: str) -> None:
    connection = handler["w"]
    lock = writer_lock(connection.settings_dict["NAME"])
    if ending == "rollback":
        with transaction.atomic(using="w"):
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO t (who) VALUES ('x')")
            assert lock.locked()
            transaction.set_rollback(True, using="w")
    elif ending == "error":
        with pytest.raises(ZeroDivisionError), transaction.atomic(using="w"):
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO t (who) VALUES ('x')")
            assert lock.locked()
            1 / 0  # noqa: B018
    else:
        with transaction.atomic(using="w"):
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO t (who) VALUES ('x')")
            assert lock.locked()
            connection.close()  # e.g. a broken connection closed by `chat.streaming.db`
            assert not lock.locked()
    assert not lock.locked()
    later = _in_thread(handler, lambda c: c.cursor().execute("INSERT INTO t (who) VALUES ('y')"))
    later.join(5)
    assert _rows(handler)[-1:] == ["y"]
