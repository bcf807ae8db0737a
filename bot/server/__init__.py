"""The server: the bot's HTTP face and its process-wide runtime.

Owns: the FastAPI app (``/exotel/ws`` with its auth and its HTTP 503 refusals before accept,
``/exotel/url``, ``/exotel/passthru`` answered from the shared state store, ``/ready``,
``/healthz``, ``/metrics``), the runtime (providers and shared models loaded once, the state
store opened from BOT_STATE_URL, live calls, call slots reserved before accept, drain on
SIGTERM) and uvicorn's server. It may import ``bot.state``.

Must not touch: what happens inside a call (telephony, conversation) beyond starting a
``CallSession`` for each stream and waiting for it.
"""

from bot.server.app import create_app, run_server
from bot.server.runtime import Runtime

__all__ = ["Runtime", "create_app", "run_server"]
