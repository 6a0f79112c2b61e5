"""Serve chatsite with daphne on uvloop's event loop: `python -m chatsite.serve [daphne's options] app`.

daphne runs Twisted's asyncio reactor on a loop that `daphne.server` creates when it is imported, from the
current event-loop policy: setting uvloop's policy first is all it takes (Twisted accepts any asyncio loop
since 21.7). Every reply's work happens on that one loop (requests, the SDK's HTTP, the channel layer's
Redis connections, timers), so its cost per callback and per socket read is paid per delta.

Measured in issue 15's fifteenth session (2 cores, the README's sweep, old code then new back to back): CPU
per delta at N=100 337 → 260 µs, the relay's (moved to this launcher too) 345 → 323 µs. Per short reply the
difference stayed inside the measure's noise. See docs/notes/perf.md, "Session 15"."""

from __future__ import annotations

import asyncio
import sys

import uvloop


def use_uvloop() -> None:
    """Make uvloop the event-loop policy, before daphne creates its loop (raises if it already has)."""
    if "daphne.server" in sys.modules:
        raise RuntimeError("daphne.server is already imported: its loop exists; set the policy earlier")
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> None:
    use_uvloop()
    from daphne.cli import CommandLineInterface  # imports daphne.server: its loop is uvloop's from here

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
