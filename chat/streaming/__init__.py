"""The streaming engine: generate a reply in a background task, and follow it over server-sent events
from any process. What views and signals use is exported here; the modules behind it are:

- `producer`: calls the model, runs tools, publishes each delta to the channel layer;
- `subscriber`: one SSE stream from a character offset, with no gap and no duplicate;
- `flusher`: saves every local reply and renews its lease on a throttle; `lifecycle`: start, reap, and
  drain (on shutdown: refuse new replies, let running ones finish, save the rest as interrupted);
- `pubsub` (names and message shapes), `layers` (the in-memory layer), `db` (background ORM threads),
  `sse` (framing), `tasks` (detached tasks).

Import order has no cycle: tasks, db, sse, pubsub, layers ← flusher ← producer ← lifecycle; subscriber."""

from chat.streaming.caps import open_stream_slot
from chat.streaming.lifecycle import DrainReport, drain, is_draining, start_reply, with_background_tasks
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
    "DrainReport",
    "aend_reply_streams",
    "aend_session_streams",
    "aend_user_streams",
    "drain",
    "end_reply_streams",
    "end_session_streams",
    "end_user_streams",
    "is_draining",
    "open_stream_slot",
    "reply_events",
    "request_stop",
    "start_reply",
    "with_background_tasks",
]
