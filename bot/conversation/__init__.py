"""The conversation: what happens between the caller's audio coming in and the bot's going out.

Owns: the pipeline's assembly (STT -> user turn -> LLM -> TTS -> holding phrases -> output),
turn taking (Silero VAD on one shared session, the speech timeouts, the speculative LLM
request), holding phrases (cache, renderer, processor), the fault watchdog (the apology when a
provider goes quiet) and the process's memory habits between calls.

Must not touch: the socket or Exotel's JSON (telephony, serializers), HTTP (server). It receives
the call's transport from telephony and never imports it (arrows point down).
"""
