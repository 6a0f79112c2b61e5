"""`python -m chatsite.serve`, the README's server command: daphne, on uvloop's event loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_daphnes_reactor_runs_on_uvloop() -> None:
    """The loop daphne creates at import, and Twisted's reactor on it, are uvloop's."""
    done = _python(
        "from chatsite.serve import use_uvloop; use_uvloop()\n"
        "import daphne.server\n"
        "from twisted.internet import reactor\n"
        "loop = daphne.server.twisted_loop\n"
        "print(type(loop).__module__, reactor._asyncioEventloop is loop)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["uvloop", "True"]


def test_too_late_is_an_error_not_a_silent_default_loop() -> None:
    done = _python("import daphne.server\nfrom chatsite.serve import use_uvloop; use_uvloop()")
    assert done.returncode != 0
    assert "already imported" in done.stderr


def test_it_takes_daphnes_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chatsite.serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--proxy-headers" in done.stdout
