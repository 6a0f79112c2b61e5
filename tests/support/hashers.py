"""A password hasher that counts its work, to show which requests hash a password and which never do."""

from __future__ import annotations

import threading

from django.contrib.auth.hashers import MD5PasswordHasher


class CountingMD5Hasher(MD5PasswordHasher):
    """The fast test hasher (same stored format), counting every hash it computes: on sign-up, on each
    password check, and on the dummy hash Django runs for a username that does not exist."""

    _lock = threading.Lock()
    calls = 0

    def encode(self, password: str, salt: str) -> str:
        with CountingMD5Hasher._lock:
            CountingMD5Hasher.calls += 1
        return super().encode(password, salt)
