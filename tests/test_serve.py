"""`python -m chatsite.serve`, the README's server command: daphne, on uvloop's event loop."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter, with the environment minus MALLOC_ARENA_MAX, plus `env`."""
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**environ, **env},
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


# Six threads allocate at once (blocks over 512 bytes: malloc's, not pymalloc's), then glibc's malloc_stats
# prints one "Arena N:" section per arena to stderr.
_ARENAS = """
import ctypes, threading
{setup}
barrier = threading.Barrier(6)
def work():
    barrier.wait()
    kept = [bytes(1000 + i) for i in range(2000)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(setup: str, **env: str) -> int:
    done = _python(_ARENAS.format(setup=setup), **env)
    assert done.returncode == 0, done.stderr
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


glibc_only = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_stats"), reason="not glibc")


@glibc_only
def test_the_server_keeps_malloc_to_two_arenas() -> None:
    # Without the cap, each of the six threads gets an arena of its own (glibc allows 8 per core).
    assert _arenas("") >= 4
    assert _arenas("from chatsite.serve import limit_malloc_arenas; assert limit_malloc_arenas()") == 2


@glibc_only
def test_an_operators_malloc_arena_max_wins() -> None:
    setup = "from chatsite.serve import limit_malloc_arenas; assert not limit_malloc_arenas()"
    assert _arenas(setup, MALLOC_ARENA_MAX="3") == 3
