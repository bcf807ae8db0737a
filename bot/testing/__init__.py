"""The test kit: fakes of every cloud API and a local-server helper.

Owns: fake Deepgram, OpenAI and Cartesia servers that speak the real wire protocols (so the
tests run Pipecat's own services against them through each base-URL override), and
``serving`` / ``QuietServer`` for starting an app on a loopback port.

Must not touch: the serving path. Tests, the benches and the cli's demo/call commands import
this kit; no module of server, telephony, conversation, providers or observability does.
"""

from bot.testing.fakes import *  # noqa: F403  (every fake's public name: see its __all__)
from bot.testing.fakes import __all__ as _FAKES
from bot.testing.localserver import QuietServer, serving

__all__ = [*_FAKES, "QuietServer", "serving"]
