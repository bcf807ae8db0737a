"""The wire: Exotel's JSON events <-> Pipecat frames, and Exotel's chunk rule.

Owns: parsing every inbound event (``connected``, ``start``, ``media``, ``dtmf``, ``mark``,
``clear``, ``stop``) without ever raising on bad input, building outbound ``media``/``mark``/
``clear`` messages, and the chunk rule (a multiple of 320 bytes and whole 20 ms frames, at least
3200 bytes — 3840 at 24 kHz — at most 100 000).

Must not touch: anything of the bot. It imports only Pipecat and the standard library; every
room may import it.
"""
