"""Opt-in heap snapshots for finding where memory goes (issue 15: RSS per stream); off unless
``CHAT_TRACEMALLOC_DIR`` is set. Dependency-free, so the bench's raw-ASGI relay uses it too.

With ``CHAT_TRACEMALLOC_DIR=<dir>`` the process starts ``tracemalloc`` (``CHAT_TRACEMALLOC_FRAMES`` frames
per traceback, 25 by default) and, on each SIGUSR1, writes ``tracemalloc.take_snapshot()`` to
``<dir>/snap-<pid>-<seq>.pickle`` and, beside it, ``.json``: the traced heap now (``traced``) and its
highest since the previous dump (``traced_peak``), the process's RSS, and tracemalloc's own memory.
Compare two snapshots with ``python -m bench.memdiff``; ``python -m bench.memsnap`` runs a bench level and
takes them (docs/notes/memory.md).

Tracing costs CPU and memory (each live block's traceback): never on in production, and the RSS of a
traced process is not the bench's figure."""

from __future__ import annotations

import json
import os
import signal
import time
import tracemalloc
from pathlib import Path
from types import FrameType

ENV_DIR = "CHAT_TRACEMALLOC_DIR"
ENV_FRAMES = "CHAT_TRACEMALLOC_FRAMES"

_seq = 0


def _rss_bytes() -> int:
    """Resident set size from /proc (Linux); 0 where there is none."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def dump(directory: Path) -> Path:
    """Write a snapshot of the traced heap now (and its sidecar .json); return the snapshot's path."""
    global _seq
    _seq += 1
    stem = directory / f"snap-{os.getpid()}-{_seq:03d}"
    traced, peak = tracemalloc.get_traced_memory()
    meta = {"time": time.time(), "rss": _rss_bytes(), "traced": traced, "traced_peak": peak}
    snapshot = tracemalloc.take_snapshot()
    meta["tracemalloc_overhead"] = tracemalloc.get_tracemalloc_memory()
    tracemalloc.reset_peak()  # the next dump's traced_peak: the highest since this one
    snapshot.dump(str(stem.with_suffix(".pickle")))
    stem.with_suffix(".json").write_text(json.dumps(meta))
    return stem.with_suffix(".pickle")


def install_from_env() -> bool:
    """Start tracing and the SIGUSR1 dump when CHAT_TRACEMALLOC_DIR is set; return whether it is.

    Call it from the main thread (signal handlers can only be set there). What is allocated before it is
    not traced: call it once the app is loaded, when only the growth from there on matters (tracing the
    start-up with 25 frames slows it several-fold)."""
    target = os.environ.get(ENV_DIR)
    if not target:
        return False
    directory = Path(target)
    directory.mkdir(parents=True, exist_ok=True)
    if not tracemalloc.is_tracing():
        tracemalloc.start(int(os.environ.get(ENV_FRAMES) or 25))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes: the event loop stands still while the heap is
        # copied, so the snapshot is consistent.
        dump(directory)

    signal.signal(signal.SIGUSR1, on_signal)
    return True
