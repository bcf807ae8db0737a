"""The server: the bot's HTTP face and its process-wide runtime.

Owns: the FastAPI app (``/exotel/ws`` with its auth, ``/exotel/url``, ``/exotel/passthru``,
``/healthz``, ``/metrics``), the runtime (providers and shared models loaded once, live calls,
the call limit, drain on SIGTERM) and uvicorn's server.

Must not touch: what happens inside a call (telephony, conversation) beyond starting a
``CallSession`` for each stream and waiting for it.
"""

from bot.server.app import create_app, run_server
from bot.server.runtime import Runtime

__all__ = ["Runtime", "create_app", "run_server"]
