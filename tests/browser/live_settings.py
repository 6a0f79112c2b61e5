"""The live server's settings for browser tests: the real ones, with a fast password hasher (the default
PBKDF2 costs seconds per sign-up on a busy 2-core machine, and every test signs a fresh user up)."""

from chatsite.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
