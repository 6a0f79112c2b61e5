"""Load `chatsite.settings` in a fresh interpreter, as a server does at start-up, in a given environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def settings_value(env: dict[str, str], name: str, *, unset: Iterable[str] = ("DEBUG", "SECRET_KEY")) -> str:
    """`str(settings.<name>)` with `env` on top of the caller's environment minus `unset` (so what the
    test runner itself exported cannot decide the outcome). A setting that refuses to load raises
    AssertionError carrying the interpreter's stderr (the ImproperlyConfigured message)."""
    dropped = set(unset)
    result = subprocess.run(
        [sys.executable, "-c", f"from chatsite import settings; print(settings.{name})"],
        env={
            **{k: v for k, v in os.environ.items() if k not in dropped},
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
