"""The streaming engine: generate a reply in a background task, and follow it over server-sent events
from any process. What views and signals use is exported here; the modules behind it are:

- `producer`: calls the model, runs tools, publishes each delta to the channel layer;
- `subscriber`: one SSE stream from a character offset, with no gap and no duplicate;
- `admission`: at most CHAT_MAX_ACTIVE_REPLIES replies per process; a start past it is refused at once, and
  at most CHAT_MAX_CONCURRENT_STARTS starts do their work at once (the others wait their turn);
- `metrics`: this process's numbers for `/metrics` (cheap counters on the hot path, read at scrape);
- `flusher`: saves every local reply and renews its lease on a throttle; `lifecycle`: start, reap, and
  drain (on shutdown: refuse new replies, let running ones finish, save the rest as interrupted);
- `pubsub` (names and message shapes), `layers` (the in-memory layer), `db` (background ORM threads),
  `sse` (framing), `tasks` (detached tasks).

Import order has no cycle: tasks, db, sse, pubsub, layers, admission ← metrics ← flusher ← producer ←
lifecycle; subscriber."""

from chat.streaming.admission import Slot as ReplySlot
from chat.streaming.admission import holding as holding_reply_slot
from chat.streaming.admission import reserve as reserve_reply_slot
from chat.streaming.admission import starting as starting_reply
from chat.streaming.caps import open_stream_slot
from chat.streaming.lifecycle import (
    REQUEST_ARRIVED,
    DrainReport,
    astart_reply,
    drain,
    is_draining,
    start_reply,
    with_background_tasks,
)
from chat.streaming.metrics import REGISTRY as METRICS_REGISTRY
from chat.streaming.producer import Loaded as PreparedReply
from chat.streaming.producer import prepare_reply
from chat.streaming.pubsub import (
    aend_reply_streams,
    aend_session_streams,
    aend_user_streams,
    end_reply_streams,
    end_session_streams,
    end_user_streams,
    request_stop,
)
from chat.streaming.subscriber import reply_events

__all__ = [
    "METRICS_REGISTRY",
    "REQUEST_ARRIVED",
    "DrainReport",
    "PreparedReply",
    "ReplySlot",
    "aend_reply_streams",
    "aend_session_streams",
    "aend_user_streams",
    "astart_reply",
    "drain",
    "end_reply_streams",
    "end_session_streams",
    "end_user_streams",
    "holding_reply_slot",
    "is_draining",
    "open_stream_slot",
    "prepare_reply",
    "reply_events",
    "request_stop",
    "reserve_reply_slot",
    "start_reply",
    "starting_reply",
    "with_background_tasks",
]
