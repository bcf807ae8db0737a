"""The phone-less call: an Exotel stand-in client and the report of what it heard.

Owns: a client that calls the bot the way Exotel does (``connected``, ``start``, paced media,
mark echoes, ``dtmf``, ``stop``) while checking everything the bot sends, and the report of the
call (turn table, stereo WAV, timeline PNG), also rebuilt from a saved call record.

Must not touch: the server's internals. It talks to the bot over its WebSocket only, so the demo,
the tests and ``python -m bot call`` against a deployed bot see the same thing Exotel would.
Serving code never imports it.
"""
