"""Observability: what a call leaves behind for the people who run the bot.

Owns: the per-call observer and its record (turns, latencies, barge-ins, compliance, the stereo
WAV), the summary line, secrets redaction, the Prometheus metrics, and the log format (every call
line carries ``call_sid`` and ``stream_sid``).

Must not touch: the call's behaviour. It watches frames and writes files; any room may import it,
and it imports only ``bot.config`` and ``serializers``.
"""
