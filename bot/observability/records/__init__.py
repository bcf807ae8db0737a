"""Call records: what one call leaves behind, turn by turn, with times.

Why: when a caller says "the bot went quiet", the operator needs that call's story (what the
bot heard, what it answered, how long the caller waited, whether a holding phrase or a barge-in
happened) from its ``call_sid``; and a dashboard needs the same latencies as histograms so a
slow provider shows up before callers complain.

Owns, one module each:

* ``model``: ``TurnRecord``, the constants that define a record, ``summarize`` and the summary
  line (pure data, no I/O).
* ``observer``: ``CallObserver`` (one per call, fed by Pipecat's frame pushes) and
  ``watch_call``, which attaches one to a built call session.
* ``redaction``: ``configured_secrets`` and ``Redactor`` (records and log lines).
* ``serialise``: the files: ``<CALL_RECORDS_DIR>/<YYYY-MM-DD>/<call_sid>.json`` and, with
  ``CALL_RECORDS_AUDIO``, a stereo WAV beside it, written atomically; ``load_record``.

Times in a record are seconds on the monotonic clock since the call started
(``CallSession.started_at``); ``started_at`` gives the wall-clock start in ISO 8601 UTC.

Must not touch: the call's behaviour, and no room above observability: it imports only
``bot.config``, ``serializers`` and libraries. Drawing a record like a simulated call
(``python -m bot report``) lives in ``bot.simulator.from_record``, which imports this package,
not the other way round.
"""

from bot.observability.records.model import TurnRecord, provider_label, summarize, summary_line
from bot.observability.records.observer import CallObserver
from bot.observability.records.redaction import REDACTED, Redactor, configured_secrets
from bot.observability.records.serialise import (
    StereoAudio,
    build_stereo,
    load_record,
    record_path,
    write_record,
)
from bot.observability.records.watch import watch_call

__all__ = [
    "REDACTED",
    "CallObserver",
    "Redactor",
    "StereoAudio",
    "TurnRecord",
    "build_stereo",
    "configured_secrets",
    "load_record",
    "provider_label",
    "record_path",
    "summarize",
    "summary_line",
    "watch_call",
    "write_record",
]
