"""Django's SQLite backend, where the threads of one process that want to write queue on a lock instead of
on SQLite's busy handler.

SQLite allows one writer at a time. A connection that finds the write lock taken gets SQLITE_BUSY, and the
busy handler (the `timeout` option) retries after sleeping 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100
ms at a time: the waiter sleeps on, well after the lock came free. Measured in the bench at N=50 (a timer on
every query, ./bench/run --levels 50 --targets ours, not committed): the start's `BEGIN IMMEDIATE`, waiting
behind the flusher's batch saves, took 7.6 ms on average and up to 181 ms, on the first token's path, while
the transactions it waited for take 1-3 ms. A thread lock hands over the moment it is released.

So a write transaction (`BEGIN IMMEDIATE`, Django's `transaction_mode`) and a write outside a transaction
(an autocommit INSERT, UPDATE, DELETE or schema change) first take this process's lock for that database
file, waiting at most the `timeout` option, as SQLite would, then fail the same way ("database is
locked"). Other processes on the same file (a management command, the tests' direct reads) still meet
SQLite's own busy handler."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import Any

from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

_WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)

# One lock per database file in this process: SQLite's write lock covers a whole file.
_writers: dict[str, threading.Lock] = {}
_writers_lock = threading.Lock()


def writer_lock(name: str) -> threading.Lock:
    """This process's writer lock for the database file `name`."""
    with _writers_lock:
        return _writers.setdefault(name, threading.Lock())


def _acquire(writer: threading.Lock, timeout: float) -> None:
    if not writer.acquire(timeout=timeout):
        raise OperationalError("database is locked")


class SQLiteCursorWrapper(base.SQLiteCursorWrapper):
    """An autocommit write (no transaction open on this connection) takes the writer lock around itself."""

    writer: threading.Lock
    timeout = 5.0

    @contextlib.contextmanager
    def _turn(self, query: str) -> Iterator[None]:
        """The writer lock around an autocommit write; nothing for a read or inside a transaction."""
        if self.connection.in_transaction or not _WRITES.match(query):
            yield
            return
        _acquire(self.writer, self.timeout)
        try:
            yield
        finally:
            self.writer.release()

    def execute(self, query: str, params: Any = None) -> Any:
        with self._turn(query):
            return super().execute(query, params)

    def executemany(self, query: str, param_list: Any) -> Any:
        with self._turn(query):
            return super().executemany(query, param_list)


class DatabaseWrapper(base.DatabaseWrapper):
    """Holds the writer lock from `BEGIN` until the transaction ends (commit, rollback or close)."""

    holds_writer = False

    def _timeout(self) -> float:
        return float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5.0))

    def _writer(self) -> threading.Lock:
        return writer_lock(str(self.settings_dict["NAME"]))

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=SQLiteCursorWrapper)
        cursor.writer = self._writer()
        cursor.timeout = self._timeout()
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        _acquire(self._writer(), self._timeout())
        self.holds_writer = True
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private in the stubs
        except BaseException:
            self._release_writer()
            raise

    def _release_writer(self, *, ended: bool = False) -> None:
        # Only once the transaction has really ended (`ended`: the connection was closed): a COMMIT that
        # failed leaves it open, still writing.
        if self.holds_writer and (ended or self.connection is None or not self.connection.in_transaction):
            self.holds_writer = False
            self._writer().release()

    def _commit(self) -> Any:
        try:
            return super()._commit()  # type: ignore[misc]  # private in the stubs
        finally:
            self._release_writer()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()  # type: ignore[misc]  # private in the stubs
        finally:
            self._release_writer()

    def _close(self) -> Any:
        try:
            return super()._close()  # type: ignore[misc]  # private in the stubs
        finally:
            self._release_writer(ended=True)  # closing ends whatever transaction was open
