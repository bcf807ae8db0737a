"""Telephony: one Exotel call on the wire, from the handshake to the closed socket.

Owns: reading ``connected`` and ``start`` (``read_handshake``), the call controller
(``CallSession``: pipeline, greeting, end_call, idle prompt, teardown), and the output transport
that keeps Exotel's rules: real-time pacing, compliant chunks, marks and their echoes, ``clear``.

Must not touch: HTTP routes and process-wide state (server), provider choice (providers), the
wire format itself (``serializers.exotel``). It builds the conversation (``bot.conversation``)
and hands it this call's transport.
"""

from bot.telephony.call import CallInfo, CallSession, read_handshake
from bot.telephony.transport import ExotelOutputTransport, ExotelTransport, exotel_params

__all__ = [
    "CallInfo",
    "CallSession",
    "ExotelOutputTransport",
    "ExotelTransport",
    "exotel_params",
    "read_handshake",
]
