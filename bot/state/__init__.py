"""The state store: every piece of state that outlives one request or one process.

Owns: one small interface (:class:`StateStore`: keys with a time to live, an atomic claim, and
queues of due items for the outbox) and its backends, chosen by ``BOT_STATE_URL``. Call outcomes
(a transfer), context fetched at the dynamic URL, the post-call outbox and campaign state all
live here, so any instance can answer for a call another instance served.

Must not touch: calls, pipelines, HTTP or providers. It imports only ``bot.config``; every other
room may import it.
"""

from bot.state.base import QueuedItem, StateStore
from bot.state.memory import MemoryStore

__all__ = ["MemoryStore", "QueuedItem", "StateStore"]
