"""How long a turn waits after the VAD stop, from the turn model's verdict and the words.

Pure logic, no model: the stop strategy (bot/turns.py) asks the turn model for a verdict
at the VAD stop (bot/conversation/smart_turn.py) and calls :func:`turn_wait` with it and
the transcript, each time either changes. Kept apart from the model so the table can be
tested, and imported, without onnxruntime.

Why a hybrid and not the model alone: on phone audio smart-turn calls many finished
sentences "incomplete", and Pipecat's analyzer then waits its 3 s fallback. Here an
"incomplete" verdict waits at most ``unfinished_timeout``, and the model is only trusted
to *shorten* the wait when the words agree that the sentence is over.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TurnVerdict:
    """The turn model's judgement of one turn's audio.

    ``complete``: the probability reached the model's threshold (Pipecat: > 0.5).
    ``elapsed_ms``: from the request to the answer, queueing and features included: what
    the turn actually waited for it.
    """

    complete: bool
    probability: float
    elapsed_ms: float


def turn_wait(
    verdict: TurnVerdict | None,
    transcript: str,
    unfinished: bool,
    speech_timeout: float,
    unfinished_timeout: float,
) -> float:
    """Seconds the turn waits after the VAD stop before it ends (and the answer plays).

    ``unfinished`` is the transcript rule's reading of ``transcript`` (bot.turns'
    ``sounds_unfinished``: a trailing comma or a word a sentence hardly ends on), computed
    by the caller, which also decides whether the rule applies (English only).
    ``verdict`` is None when the model is off, failed, or did not answer in time.

    ================  =========================  ======================  ================
    verdict           transcript finished        transcript unfinished   transcript empty
    ================  =========================  ======================  ================
    complete          0 (answer at once)         long                    speech_timeout
    incomplete        long                       long                    speech_timeout
    None (no answer)  speech_timeout             long                    speech_timeout
    ================  =========================  ======================  ================

    long = ``max(unfinished_timeout, speech_timeout)``: an "incomplete" verdict or an
    unfinished word never ends a turn sooner than it would end without the model (so
    ``unfinished_timeout`` 0, the rule switched off, falls back to ``speech_timeout``).

    Why each cell:

    * complete + finished words: both signals agree; the speculative answer is already on
      its way, so it is released at once. This is the only cell the model makes faster.
    * complete + unfinished words: the words veto the model ("... the delivery address
      to" said with falling intonation is still unfinished).
    * incomplete: the model heard a sentence going on; wait for the rest as long as an
      unfinished word would, but not the model's 3 s fallback.
    * None: exactly today's behaviour, the transcript rule alone.
    * empty transcript: there is nothing to answer yet (noise, or the STT is late); the
      stop strategy still waits for words, so the verdict cannot speed anything up.
    """
    long_wait = max(unfinished_timeout, speech_timeout)
    if not transcript.strip():
        return speech_timeout
    if unfinished:
        return long_wait
    if verdict is None:
        return speech_timeout
    return 0.0 if verdict.complete else long_wait
