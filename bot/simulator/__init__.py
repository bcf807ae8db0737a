"""The phone-less call: an Exotel stand-in client and the report of what it heard.

Owns: a client that calls the bot the way Exotel does (``connected``, ``start``, paced media,
mark echoes, ``dtmf``, ``stop``) while checking everything the bot sends, and the report of the
call (turn table, stereo WAV, timeline PNG), also rebuilt from a saved call record.

Must not touch: the server's internals. It talks to the bot over its WebSocket only, so the demo,
the tests and ``python -m bot call`` against a deployed bot see the same thing Exotel would.
Serving code never imports it.

Modules: ``script`` (the caller's steps and ``CallConfig``), ``client`` (``ExotelSimulator``,
``simulate_call``), ``protocol`` (the rules every bot frame is checked against), ``player``
(Exotel's playout model and the turn metrics), ``model`` (``CallRecording`` and its parts),
``report`` (table, WAV, PNG) and ``from_record`` (a server's call record drawn the same way;
``python -m bot report``). ``report`` and ``from_record`` load matplotlib, so they are imported
by name, not from here.
"""

from bot.simulator.client import ExotelSimulator, simulate_call
from bot.simulator.model import CallRecording, DtmfRecord, MessageRecord, Turn
from bot.simulator.player import ExotelPlayer, compute_turns
from bot.simulator.protocol import check_bot_message, chunk_size_problems, min_chunk_bytes
from bot.simulator.script import (
    Action,
    BargeIn,
    CallConfig,
    Dtmf,
    Hangup,
    Say,
    SendRaw,
    Wait,
    WaitForBot,
    WaitForBotHangup,
    load_audio,
    speech_bounds,
)

__all__ = [
    "Action",
    "BargeIn",
    "CallConfig",
    "CallRecording",
    "Dtmf",
    "DtmfRecord",
    "ExotelPlayer",
    "ExotelSimulator",
    "Hangup",
    "MessageRecord",
    "Say",
    "SendRaw",
    "Turn",
    "Wait",
    "WaitForBot",
    "WaitForBotHangup",
    "check_bot_message",
    "chunk_size_problems",
    "compute_turns",
    "load_audio",
    "min_chunk_bytes",
    "simulate_call",
    "speech_bounds",
]
