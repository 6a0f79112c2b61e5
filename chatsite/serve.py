"""Serve chatsite with daphne on uvloop's event loop: `python -m chatsite.serve [daphne's options] app`.

daphne runs Twisted's asyncio reactor on a loop that `daphne.server` creates when it is imported, from the
current event-loop policy: setting uvloop's policy first is all it takes (Twisted accepts any asyncio loop
since 21.7). Every reply's work happens on that one loop (requests, the SDK's HTTP, the channel layer's
Redis connections, timers), so its cost per callback and per socket read is paid per delta.

Measured in issue 15's fifteenth session (2 cores, the README's sweep, old code then new back to back): CPU
per delta at N=100 337 → 260 µs, the relay's (moved to this launcher too) 345 → 323 µs. Per short reply the
difference stayed inside the measure's noise. See docs/notes/perf.md, "Session 15".

It also caps glibc's malloc at two arenas (`limit_malloc_arenas`)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys

import uvloop


def use_uvloop() -> None:
    """Make uvloop the event-loop policy, before daphne creates its loop (raises if it already has)."""
    if "daphne.server" in sys.modules:
        raise RuntimeError("daphne.server is already imported: its loop exists; set the policy earlier")
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc at `arenas` arenas, unless MALLOC_ARENA_MAX is set (glibc has applied it). True
    if the cap was set; False where there is no glibc `mallopt` (musl accepts and ignores it: also False).

    Why: glibc gives each new thread its own arena, up to 8 per core, so that threads need not wait for each
    other's malloc lock. Python code allocates under the GIL, so the extra arenas save little waiting, and
    each keeps its own high-water mark: the database threads' arenas grew under load and kept it. Measured
    in issue 15's seventeenth session (the in-memory process on PostgreSQL, 8 database threads, N=50,
    `python -m bench.memsnap --no-trace --target ours --n 50 -- --db postgres`, five pairs with
    MALLOC_ARENA_MAX=2 and without, alternating which ran first): RSS per stream 135-148 KB against 147-154
    KB, lower in every pair; two thread arenas had grown by 0.6-0.8 MiB each. CPU per delta did not move
    beyond the noise."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc's C library
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


def main() -> None:
    limit_malloc_arenas()  # before any thread starts: each would take an arena on its first malloc
    use_uvloop()
    from daphne.cli import CommandLineInterface  # imports daphne.server: its loop is uvloop's from here

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
