"""ASGI entry point: channels' ProtocolTypeRouter in front of Django's async handler (minus its thread per
request: chat/handlers.py); under daphne, a drain of the running replies before the process exits."""

import asyncio
import gc
import os
import sys
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# Django must be set up before anything imports models (chat.handlers' own imports do not).
from chat.handlers import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.template.loader import get_template  # noqa: E402
from django.urls import get_resolver  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402  (does not install a reactor)

from chat.streaming import drain, with_background_tasks  # noqa: E402
from chatsite.memtrace import install_from_env  # noqa: E402

application = ProtocolTypeRouter({"http": with_background_tasks(django_asgi_app)})


def freeze_startup_heap() -> None:
    """Load what the first requests would (every view module, the chat page's template), then move
    everything alive into the garbage collector's permanent generation (`gc.freeze`).

    Why: a full (generation 2) collection walks every container object in the process, and Django, the SDK,
    pydantic and the compiled templates are hundreds of thousands of them. In the bench (a `gc.callbacks`
    timer in the server, `./bench/run --levels 10,50 --targets ours`) each full collection took 110-131 ms,
    every stream stood still meanwhile, and that was the per-delta tail (p99 26-40 ms, max 139 ms at
    N=10). Frozen objects are never traversed again and never freed (they live as long as the process
    anyway); collections then see only what requests and replies allocate."""
    get_resolver().url_patterns  # noqa: B018  (imports every view module)
    get_template("chat/conversation.html")  # compiled once and kept, with the cached loader (DEBUG off)
    gc.collect()
    gc.freeze()


freeze_startup_heap()
# Heap snapshots on SIGUSR1 when CHAT_TRACEMALLOC_DIR is set (docs/notes/memory.md): from here on, so that
# tracing does not slow the start-up (several-fold with 25 frames); what is measured is growth after it.
install_from_env()


def drain_before_shutdown() -> bool:
    """Under daphne, drain the running replies when the process is told to stop (SIGTERM, SIGINT).

    daphne runs on Twisted's asyncio reactor, which turns those signals into a reactor shutdown. Its "before"
    triggers may return a Deferred, and the reactor waits for it before the "during" phase closes the
    listening sockets: so while the drain runs, the process still answers, and refuses new replies with a
    503 instead of leaving clients to a closed port. (daphne's own trigger cancels the open requests,
    streams included, at once; their pages reconnect, to another process behind the proxy.)

    The reactor is looked up, never imported: importing it would install Twisted's default reactor in a
    process that is not daphne's (uvicorn, tests). Returns whether the trigger was installed."""
    reactor: Any = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not hasattr(reactor, "_asyncioEventloop"):
        return False

    def before_shutdown() -> Deferred[Any]:
        draining = drain(seconds=settings.CHAT_DRAIN_SECONDS)
        return Deferred.fromFuture(asyncio.ensure_future(draining, loop=reactor._asyncioEventloop))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    return True


drain_before_shutdown()
