"""Per-call observability: what happened on a call, turn by turn, with times.

Why: when a caller says "the bot went quiet", the operator needs that call's story (what the
bot heard, what it answered, how long the caller waited, whether a holding phrase or a barge-in
happened) from its ``call_sid``; and a dashboard needs the same latencies as histograms so a
slow provider shows up before callers complain.

* ``CallObserver`` (one per call) watches frames as Pipecat pushes them, builds the call's
  record and feeds the Prometheus histograms of ``bot.observability.metrics.Metrics`` live.
* ``CallObserver.finish`` logs one INFO summary line and, with ``CALL_RECORDS_DIR`` set,
  writes ``<dir>/<YYYY-MM-DD>/<call_sid>.json`` (and a stereo WAV with
  ``CALL_RECORDS_AUDIO``), atomically, with every configured secret redacted.
* ``report_main`` (``python -m bot report CALL.json``) renders a record with
  ``bot.simulator.report``: the same table and timeline picture as a simulated call.

Times in a record are seconds on the monotonic clock since the call started
(``CallSession.started_at``); ``started_at`` gives the wall-clock start in ISO 8601 UTC.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    InputAudioRawFrame,
    InputDTMFFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport
from pydantic import SecretStr

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.observability.metrics import Metrics
    from bot.simulator.client import CallRecording

RECORD_VERSION = 1
# A clear more than this long after a caller's onset was not caused by that onset.
BARGE_IN_WINDOW_SECS = 3.0
# The bot pauses at the caller's first voiced window, which the onset estimate (VAD start
# minus start_secs) places to within an inbound frame or so: a clear this much before a
# turn's onset is still that turn's.
CLEAR_BEFORE_ONSET_SECS = 0.1
# Caller audio that stays later than the stream's own clock by more than CALLER_GAP_SECS for
# CALLER_RESYNC_SECS of audio means the stream really paused (a burst after a stall drains).
CALLER_GAP_SECS = 0.5
CALLER_RESYNC_SECS = 2.0
# Shorter "secrets" (e.g. a 3-letter password) would redact ordinary words everywhere.
MIN_SECRET_CHARS = 4
REDACTED = "[redacted]"
EPSILON = 1e-3
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9_.-]")
_INSTANCE_SUFFIX = re.compile(r"#\d+$")
_DOWN = FrameDirection.DOWNSTREAM  # a module constant: Enum attribute lookups are slow


class CallInfoLike(Protocol):
    """What the observer needs to know about the call (``bot.telephony.call.CallInfo`` fits)."""

    call_sid: str
    stream_sid: str
    account_sid: str
    from_number: str
    to_number: str
    custom_parameters: dict[str, str]
    sample_rate: int


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value in ``settings``, plus the forms EXOTEL_BASIC_AUTH travels in.

    The Basic-auth credential appears as ``user:password``, as its base64 (the header), and
    URL-quoted in the stream URL, so each form is listed; so is the password alone.
    """
    found: set[str] = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if not isinstance(value, SecretStr):
            continue
        secret = value.get_secret_value()
        found.add(secret)
        if name == "exotel_basic_auth":
            password = secret.partition(":")[2]
            found |= {
                password,
                quote(password, safe=""),
                base64.b64encode(secret.encode()).decode(),
            }
    return sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)


class Redactor:
    """Replaces known secret values in text, trees of JSON values, and loguru records.

    Longest secrets first, so a secret that contains another is replaced whole.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len)[::-1]

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def tree(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string (keys included) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.tree(v) for v in value]
        return value

    def patch_log_record(self, record: dict[str, Any]) -> None:
        """A loguru patcher: redacts the message before any sink formats it."""
        if self.secrets:
            record["message"] = self.text(record["message"])


# --------------------------------------------------------------------------------------------
# The record's parts
# --------------------------------------------------------------------------------------------


@dataclass
class TurnRecord:
    """One caller turn (Pipecat's user turn) and what the bot did about it.

    speech_start / speech_end: the caller's speech as VAD saw it (VAD decision time minus its
    start_secs / stop_secs), so they estimate when the caller really started and stopped.
    turn_end: UserStoppedSpeakingFrame, when Pipecat committed to answering.
    first_bot_audio: the first bot audio sent after the caller stopped (a holding phrase
    counts: it is what the caller hears). response_latency = first_bot_audio - speech_end.
    interrupted: the caller's onset cut the bot off (a ``clear`` was sent);
    clear_latency = clear_at - speech_start.
    answered: the LLM's text after this turn; spoken: what the TTS said after it (either may
    include later prompts until the next turn).
    """

    index: int
    speech_start: float | None = None
    speech_end: float | None = None
    speech: list[list[float | None]] = field(default_factory=list)
    turn_start: float | None = None
    turn_end: float | None = None
    heard: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)
    bot_speaking_at_onset: bool = False
    first_bot_audio: float | None = None
    response_latency: float | None = None
    holding: list[dict[str, Any]] = field(default_factory=list)
    holding_latency: float | None = None
    interrupted: bool = False
    clear_at: float | None = None
    clear_latency: float | None = None

    @property
    def speaking(self) -> bool:
        """The caller is mid-utterance (VAD started, not yet stopped)."""
        return bool(self.speech) and self.speech[-1][1] is None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "speech_start": _ms(self.speech_start),
            "speech_end": _ms(self.speech_end),
            "speech": [[_ms(a), _ms(b)] for a, b in self.speech],
            "turn_start": _ms(self.turn_start),
            "turn_end": _ms(self.turn_end),
            "heard": " ".join(t.strip() for t in self.heard if t.strip()),
            "answered": "".join(self.answered).strip(),
            "spoken": " ".join(t.strip() for t in self.spoken if t.strip()),
            "bot_speaking_at_onset": self.bot_speaking_at_onset,
            "first_bot_audio": _ms(self.first_bot_audio),
            "response_latency": _ms(self.response_latency),
            "holding_phrase": bool(self.holding),
            "holding": self.holding,
            "holding_latency": _ms(self.holding_latency),
            "interrupted": self.interrupted,
            "clear_at": _ms(self.clear_at),
            "clear_latency": _ms(self.clear_latency),
        }


def _ms(value: float | None) -> float | None:
    """Seconds rounded to the millisecond: finer is noise, and it keeps records readable."""
    return None if value is None else round(value, 3)


def provider_label(processor_name: str) -> str:
    """``DeepgramSTTService#12`` -> ``DeepgramSTTService``: the suffix counts instances per
    process, so as a Prometheus label it would grow without bound (one series per call)."""
    return _INSTANCE_SUFFIX.sub("", processor_name)


# --------------------------------------------------------------------------------------------
# The observer
# --------------------------------------------------------------------------------------------

Handler = Callable[[FramePushed], None]


class CallObserver(BaseObserver):
    """Builds one call's record from the frames Pipecat pushes, and feeds the histograms.

    It only asks to see each frame's first push (``observe_every_push=False``), so a frame is
    seen once, at the hop where it is created: caller audio leaving the input transport,
    transcripts leaving the STT, LLM text leaving the LLM, audio chunks and bot-speaking
    frames leaving the output transport (i.e. after they were written to Exotel), metrics
    leaving their service. SystemFrames broadcast both ways are two frames; only the
    downstream one is counted. Frames arrive through Pipecat's observer queue, so times come
    from the push timestamps (the pipeline clock), not from when the observer runs.

    Transport events (marks, clear) and ``note_holding_phrase`` arrive outside that queue
    and may be seen before the frames that precede them; they are matched to turns by time.
    """

    def __init__(
        self,
        call: CallInfoLike,
        *,
        metrics: Metrics | None = None,
        records_dir: Path | str | None = None,
        record_audio: bool = False,
        secrets: Iterable[str] = (),
        started_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``started_at``: the call's start on ``clock`` (``CallSession.started_at``).

        ``clock`` must be the monotonic clock in production (Pipecat's push timestamps are
        on it); tests pass a fake one to control the times of transport events.
        """
        super().__init__(observe_every_push=False)
        self.call = call
        self.metrics = metrics
        self.records_dir = Path(records_dir) if records_dir else None
        self.record_audio = record_audio and self.records_dir is not None
        self.redactor = Redactor(secrets)
        self._clock = clock
        self.t0 = clock() if started_at is None else started_at
        self.started_wall = datetime.now(UTC) - timedelta(seconds=clock() - self.t0)
        self.turns: list[TurnRecord] = []
        self.events: list[dict[str, Any]] = []
        self.bot_speech: list[list[float | None]] = []
        self.bot_chunks: list[tuple[float, int]] = []  # (arrival estimate, bytes)
        self.ttfb: dict[str, list[float]] = {}
        self.clears: list[float] = []
        self._output: Any = None
        self._serializer: Any = None
        self._clock_offset: float | None = None
        self._bot_speaking = False
        self._run_anchor: float | None = None
        self._last_arrival = 0.0
        self._play_until = 0.0
        self._pending_clears: list[float] = []
        self._pending_holds: list[dict[str, Any]] = []
        self._caller_audio: list[tuple[float, bytes, int]] = []
        self._bot_audio: list[bytes] = []
        self._bot_rate = call.sample_rate
        self._routes = self._build_routes()
        self._dispatch: dict[type, Handler | None] = {}

    # -- wiring ----------------------------------------------------------------------------

    def attach(self, output: Any, serializer: Any = None) -> None:
        """Listen to the Exotel output transport's events; read counters from the serializer.

        ``output`` is an ``ExotelOutputTransport`` (events ``on_mark_sent``,
        ``on_mark_echoed``, ``on_clear_sent``, ``on_resumed``; ``sent_chunks``); only its
        output pushes count as audio sent to Exotel.
        """
        self._output = output
        self._serializer = serializer
        output.add_event_handler("on_mark_sent", self._on_mark_sent)
        output.add_event_handler("on_mark_echoed", self._on_mark_echoed)
        output.add_event_handler("on_clear_sent", self._on_clear_sent)
        output.add_event_handler("on_resumed", self._on_resumed)

    def attach_holding(self, processor: Any) -> None:
        """Record the phrases of a ``bot.conversation.holding.HoldingPhraseProcessor`` (its
        ``on_holding_phrase(processor, HoldingEvent)`` event)."""
        processor.add_event_handler("on_holding_phrase", self._on_holding_event)

    async def _on_holding_event(self, _processor: Any, event: Any) -> None:
        self.note_holding_phrase(event.text, event.pushed_at, event.duration_secs)

    def _build_routes(self) -> dict[type, Handler]:
        routes: dict[type, Handler] = {
            VADUserStartedSpeakingFrame: self._on_vad_start,
            VADUserStoppedSpeakingFrame: self._on_vad_stop,
            UserStartedSpeakingFrame: self._on_turn_start,
            UserStoppedSpeakingFrame: self._on_turn_end,
            TranscriptionFrame: self._on_transcript,
            LLMTextFrame: self._on_llm_text,
            TTSTextFrame: self._on_tts_text,
            BotStartedSpeakingFrame: self._on_bot_started,
            BotStoppedSpeakingFrame: self._on_bot_stopped,
            OutputAudioRawFrame: self._on_output_audio,
            MetricsFrame: self._on_metrics,
            InputDTMFFrame: self._on_dtmf,
            ErrorFrame: self._on_error,
        }
        if self.record_audio:
            routes[InputAudioRawFrame] = self._on_caller_audio
        return routes

    # -- hot path --------------------------------------------------------------------------

    async def on_push_frame(self, data: FramePushed) -> None:
        """One dict lookup per frame. The hub has left out the pushes ``wants`` declines;
        with another hub, most frames (audio in, tokens, speaking ticks) stop here."""
        handler = self._handler(type(data.frame))
        if handler is not None:
            handler(data)

    def wants(self, data: FramePushed) -> bool:
        """Whether ``on_push_frame`` would act on this push. The call's observer hub
        (bot.conversation.pipeline) asks first and queues only these, so caller audio, speaking
        ticks and bot audio on its way to the output never reach this observer's queue."""
        if self._handler(type(data.frame)) is None:
            return False
        if isinstance(data.frame, OutputAudioRawFrame):
            return self._is_output(data.source)  # counted as it leaves the output only
        return True

    def _handler(self, kind: type) -> Handler | None:
        handler = self._dispatch.get(kind, _UNRESOLVED)
        if handler is _UNRESOLVED:
            handler = self._resolve(kind)
        return handler

    def _resolve(self, kind: type) -> Handler | None:
        """The handler for a frame type (or its nearest handled base), cached per type."""
        handler = next((self._routes[base] for base in kind.__mro__ if base in self._routes), None)
        self._dispatch[kind] = handler
        return handler

    def _time(self, data: FramePushed) -> float:
        """The push time on this call's timeline (seconds since call start)."""
        if self._clock_offset is None:
            self._clock_offset = self._find_clock_offset(data)
        return data.timestamp / 1e9 + self._clock_offset

    def _find_clock_offset(self, data: FramePushed) -> float:
        # Pipecat's SystemClock counts from a monotonic_ns() origin it keeps in `_time`; with
        # another clock, estimate the origin from now (off by the observer queue's lag).
        try:
            origin_ns = getattr(data.source.get_clock(), "_time", 0)
        except Exception:
            origin_ns = 0
        if not origin_ns:
            origin_ns = time.monotonic_ns() - data.timestamp
        return origin_ns / 1e9 - self.t0

    def now(self) -> float:
        """Seconds since the call started."""
        return self._clock() - self.t0

    # -- caller ----------------------------------------------------------------------------

    def _on_vad_start(self, data: FramePushed) -> None:
        if data.direction is not _DOWN:
            return
        t = self._time(data)
        # Speech began start_secs before VAD was sure; not before the call, though.
        onset = max(0.0, t - getattr(data.frame, "start_secs", 0.0))
        turn = self._open_turn(onset)
        turn.speech.append([onset, None])
        self._settle()

    def _on_vad_stop(self, data: FramePushed) -> None:
        if data.direction is not _DOWN or not self.turns:
            return
        t = self._time(data)
        turn = self.turns[-1]
        if turn.speaking:
            end = max(t - getattr(data.frame, "stop_secs", 0.0), turn.speech[-1][0] or 0.0)
            turn.speech[-1][1] = end
            turn.speech_end = end

    def _on_turn_start(self, data: FramePushed) -> None:
        if data.direction is not _DOWN:
            return
        t = self._time(data)
        turn = self._open_turn(t)
        turn.turn_start = turn.turn_start or t
        self._settle()

    def _on_turn_end(self, data: FramePushed) -> None:
        if data.direction is not _DOWN or not self.turns:
            return
        t = self._time(data)
        turn = self.turns[-1]
        if turn.turn_end is None:
            turn.turn_end = t
            if turn.speech_end is None:
                turn.speech_end = t
            self._settle()

    def _open_turn(self, onset: float) -> TurnRecord:
        """The current turn if Pipecat has not ended it yet, else a new one from ``onset``."""
        if self.turns and self.turns[-1].turn_end is None:
            return self.turns[-1]
        turn = TurnRecord(index=len(self.turns), speech_start=onset)
        turn.bot_speaking_at_onset = self._bot_speaking or self._play_until > onset
        self.turns.append(turn)
        return turn

    def _on_transcript(self, data: FramePushed) -> None:
        if self.turns:
            self.turns[-1].heard.append(data.frame.text)

    def _on_dtmf(self, data: FramePushed) -> None:
        t = self._time(data)
        button = data.frame.button
        self._event(t, "dtmf", digit=str(getattr(button, "value", button)))

    def _on_caller_audio(self, data: FramePushed) -> None:
        t = self._time(data)
        frame = data.frame
        self._caller_audio.append((t, bytes(frame.audio), frame.sample_rate))

    # -- bot -------------------------------------------------------------------------------

    def _answering_turn(self) -> TurnRecord | None:
        """The latest turn Pipecat has ended: bot text from now on answers it."""
        for turn in reversed(self.turns):
            if turn.turn_end is not None:
                return turn
        return None

    def _on_llm_text(self, data: FramePushed) -> None:
        turn = self._answering_turn()
        if turn is not None:
            turn.answered.append(data.frame.text)

    def _on_tts_text(self, data: FramePushed) -> None:
        turn = self._answering_turn()
        if turn is not None:
            turn.spoken.append(data.frame.text)

    def _is_output(self, source: Any) -> bool:
        if self._output is not None:
            return source is self._output
        return isinstance(source, BaseOutputTransport)

    def _on_bot_started(self, data: FramePushed) -> None:
        if data.direction is not _DOWN or not self._is_output(data.source):
            return
        t = self._time(data)
        self._bot_speaking = True
        self._run_anchor = t
        self.bot_speech.append([t, None])
        turn = self.turns[-1] if self.turns else None
        if turn is None or turn.first_bot_audio is not None or turn.speaking:
            return
        since = turn.speech_end if turn.speech_end is not None else turn.turn_end
        if since is not None and t >= since - EPSILON:
            turn.first_bot_audio = t
            turn.response_latency = t - since
            if self.metrics is not None:
                self.metrics.response_latency.observe(max(0.0, turn.response_latency))

    def _on_bot_stopped(self, data: FramePushed) -> None:
        if data.direction is not _DOWN or not self._is_output(data.source):
            return
        t = self._time(data)
        self._bot_speaking = False
        if self.bot_speech and self.bot_speech[-1][1] is None:
            self.bot_speech[-1][1] = t

    def _on_output_audio(self, data: FramePushed) -> None:
        """An audio chunk the output transport has written to Exotel (pushed after writing).

        The transport paces by sleeping after each write, so a chunk is pushed about one
        chunk after it was sent: arrival ~ push - duration, never before its run started
        (BotStartedSpeakingFrame is pushed just before the run's first write).
        """
        if data.direction is not _DOWN or not self._is_output(data.source):
            return
        t = self._time(data)
        frame = data.frame
        size = len(frame.audio)
        secs = size / (2 * frame.sample_rate) if frame.sample_rate else 0.0
        if self._run_anchor is not None:
            arrival, self._run_anchor = max(self._run_anchor, t - secs), None
        else:
            arrival = max(self._last_arrival, t - secs)
        self._last_arrival = arrival
        self._play_until = max(self._play_until, arrival) + secs
        self.bot_chunks.append((arrival, size))
        if self.record_audio:
            self._bot_rate = frame.sample_rate
            self._bot_audio.append(bytes(frame.audio))

    # -- transport events (outside the frame queue) ----------------------------------------

    async def _on_mark_sent(self, _output: Any, name: str) -> None:
        self._event(self.now(), "mark_sent", name=name)

    async def _on_mark_echoed(self, _output: Any, name: str) -> None:
        self._event(self.now(), "mark_echoed", name=name)

    async def _on_clear_sent(self, _output: Any) -> None:
        t = self.now()
        self.clears.append(t)
        self._pending_clears.append(t)
        self._event(t, "clear")
        self._settle()

    async def _on_resumed(self, _output: Any) -> None:
        # The last clear was a pause at a sound that was not speech; its audio went out again.
        self._event(self.now(), "resumed")
        if self.metrics is not None:
            self.metrics.barge_in_resumes.inc()

    def note_holding_phrase(
        self, text: str, t: float | None = None, secs: float | None = None
    ) -> None:
        """The holding-phrase processor pushed a phrase's audio at monotonic time ``t``.

        ``secs`` (the phrase's length) only draws it on the timeline. The phrase is matched
        to the turn that had ended by then; if that turn's end frame has not reached this
        observer yet, the match waits for it.
        """
        at = (self._clock() if t is None else t) - self.t0
        hold = {"t": _ms(at), "text": text, "secs": _ms(secs)}
        self._pending_holds.append(hold)
        self._event(at, "holding_phrase", text=text)
        self._settle()

    # -- metrics and errors ----------------------------------------------------------------

    def _on_metrics(self, data: FramePushed) -> None:
        for item in data.frame.data:
            if type(item) is TTFBMetricsData and item.value > 0:
                label = provider_label(item.processor)
                self.ttfb.setdefault(label, []).append(item.value)
                if self.metrics is not None:
                    self.metrics.provider_ttfb.labels(provider=label).observe(item.value)

    def _on_error(self, data: FramePushed) -> None:
        t = self._time(data)
        frame = data.frame
        source = frame.processor.name if frame.processor is not None else data.source.name
        self._event(t, "error", message=str(frame.error)[:500], processor=source, fatal=frame.fatal)

    def _event(self, t: float, kind: str, **details: Any) -> None:
        self.events.append({"t": _ms(t), "type": kind, **details})

    # -- matching events to turns ----------------------------------------------------------

    def _settle(self, final: bool = False) -> None:
        """Match clears and holding phrases to turns, once the turns they belong to exist.

        With ``final`` (the call is over) nothing waits any longer: what is still unmatched
        stays an event only.
        """
        self._pending_clears = [
            c for c in self._pending_clears if not (self._match_clear(c) or final)
        ]
        self._pending_holds = [h for h in self._pending_holds if not self._match_hold(h, final)]

    def _turn_at(self, t: float) -> TurnRecord | None:
        """The latest turn whose caller onset is at or before ``t``."""
        for turn in reversed(self.turns):
            if turn.speech_start is not None and turn.speech_start <= t + EPSILON:
                return turn
        return None

    def _match_clear(self, at: float) -> bool:
        """A barge-in clear follows its turn's start and precedes its end.

        A clear seen before its turn's VAD frame would otherwise land on the previous turn,
        which has ended by then: so an ended turn waits for the next one instead.
        """
        turn = self._turn_at(at + CLEAR_BEFORE_ONSET_SECS)
        if turn is None or turn.speech_start is None:
            return False
        if turn.turn_end is not None and at > turn.turn_end + EPSILON:
            return False  # the turn that caused it is still in the observer queue
        if turn.interrupted or at - turn.speech_start > BARGE_IN_WINDOW_SECS:
            return True  # not this turn's barge-in: an event only
        turn.interrupted, turn.clear_at = True, at
        turn.clear_latency = max(0.0, at - turn.speech_start)
        if self.metrics is not None:
            self.metrics.clear_latency.observe(turn.clear_latency)
        return True

    def _match_hold(self, hold: dict[str, Any], final: bool) -> bool:
        at = hold["t"]
        turn = self._turn_at(at)
        if turn is None:
            return final or bool(self.turns)  # before any turn: an event only
        if turn.turn_end is None and not final:
            return False  # its turn-end frame is still in the observer queue
        if not turn.holding and turn.turn_end is not None:
            turn.holding_latency = at - turn.turn_end
            if self.metrics is not None:
                self.metrics.holding_latency.observe(max(0.0, turn.holding_latency))
        turn.holding.append(hold)
        return True

    # -- the record ------------------------------------------------------------------------

    def build_record(self, end_reason: str | None, hung_up_by: str | None) -> dict[str, Any]:
        """The call's record as JSON-ready data, secrets redacted."""
        self._settle(final=True)
        duration = self.now()
        for span in self.bot_speech:
            span[1] = duration if span[1] is None else span[1]
        record = {
            "record_version": RECORD_VERSION,
            "call_sid": self.call.call_sid,
            "stream_sid": self.call.stream_sid,
            "account_sid": self.call.account_sid,
            "from": self.call.from_number,
            "to": self.call.to_number,
            "custom_parameters": dict(self.call.custom_parameters),
            "sample_rate": self.call.sample_rate,
            "started_at": self.started_wall.isoformat(timespec="milliseconds"),
            "duration_secs": _ms(duration),
            "end_reason": end_reason,
            "hung_up_by": hung_up_by,
            "turns": [turn.to_json() for turn in self.turns],
            "events": sorted(self.events, key=lambda e: e["t"]),
            "bot_speech": [[_ms(a), _ms(b)] for a, b in self.bot_speech],
            "bot_audio_chunks": [[_ms(t), n] for t, n in self.bot_chunks],
            "clears": [_ms(c) for c in self.clears],
            "provider_ttfb": {k: [_ms(v) for v in vs] for k, vs in sorted(self.ttfb.items())},
            "inbound_events": dict(getattr(self._serializer, "counters", {}) or {}),
            "outbound_chunk_sizes": _size_counts(getattr(self._output, "sent_chunks", None)),
        }
        record["summary"] = summarize(record)
        return self.redactor.tree(record)

    async def finish(self, end_reason: str | None, hung_up_by: str | None) -> dict[str, Any]:
        """Log the summary line and write the record (and recording); never raises.

        Call it inside the call's ``logger.contextualize`` block so the line carries the ids
        (the worker thread inherits them). Building and writing run off the event loop: a
        long call's record and recording take milliseconds to seconds, and other calls'
        audio must not wait for them.
        """
        try:
            record, path = await asyncio.to_thread(self._build_and_write, end_reason, hung_up_by)
        except Exception:
            logger.exception("call record failed")
            return {}
        logger.info(self.redactor.text(summary_line(record, path)))
        return record

    def _build_and_write(
        self, end_reason: str | None, hung_up_by: str | None
    ) -> tuple[dict[str, Any], Path | None]:
        record = self.build_record(end_reason, hung_up_by)
        if self.records_dir is None:
            return record, None
        try:
            return record, write_record(record, self.records_dir, self._stereo_audio())
        except OSError as e:  # a full or read-only disk must not look like a failed call
            logger.warning(f"call record not written to {self.records_dir}: {e}")
            return record, None

    def _stereo_audio(self) -> StereoAudio | None:
        if not self.record_audio:
            return None
        try:
            return build_stereo(
                self._caller_audio,
                list(zip(self.bot_chunks, self._bot_audio, strict=False)),
                self.clears,
                rate=self._bot_rate or self.call.sample_rate,
            )
        except Exception as e:  # the record matters more than its recording
            logger.warning(f"call recording not built: {e.__class__.__name__}: {e}")
            return None


class _Unresolved:
    """Marks a frame type not looked up yet (None means: looked up, nothing to do)."""


_UNRESOLVED: Any = _Unresolved()


def _size_counts(sizes: Sequence[int] | None) -> dict[str, int]:
    return {str(size): n for size, n in sorted(Counter(sizes or ()).items())}


def watch_call(session: Any, settings: Settings, metrics: Metrics | None) -> CallObserver:
    """Attach a CallObserver to a built (not yet running) ``bot.telephony.call.CallSession``.

    Also records holding phrases if the session keeps its ``HoldingPhraseProcessor`` as
    ``session.holding``.
    """
    observer = CallObserver(
        session.info,
        metrics=metrics,
        records_dir=settings.call_records_dir,
        record_audio=settings.call_records_audio,
        secrets=configured_secrets(settings),
        started_at=session.started_at,
    )
    session.worker.add_observer(observer)
    observer.attach(session.transport.output(), session.serializer)
    holding = getattr(session, "holding", None)
    if holding is not None:
        observer.attach_holding(holding)
    return observer


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _p50_max(values: Sequence[float]) -> tuple[float, float] | None:
    return (statistics.median(values), max(values)) if values else None


def summarize(record: Mapping[str, Any]) -> dict[str, Any]:
    """Counts and latency p50/max in milliseconds, for the log line and dashboards."""
    turns = record["turns"]

    def stats(key: str) -> dict[str, int] | None:
        found = _p50_max([t[key] for t in turns if t.get(key) is not None])
        return (
            None
            if found is None
            else {"p50_ms": round(found[0] * 1000), "max_ms": round(found[1] * 1000)}
        )

    ttfb = {}
    for provider, values in record["provider_ttfb"].items():
        p50, top = _p50_max(values) or (0.0, 0.0)
        ttfb[provider] = {
            "p50_ms": round(p50 * 1000),
            "max_ms": round(top * 1000),
            "n": len(values),
        }
    return {
        "turns": len(turns),
        "answered": sum(1 for t in turns if t.get("first_bot_audio") is not None),
        "interruptions": sum(1 for t in turns if t.get("interrupted")),
        "holding_phrases": sum(len(t.get("holding") or ()) for t in turns),
        "response_latency": stats("response_latency"),
        "holding_latency": stats("holding_latency"),
        "clear_latency": stats("clear_latency"),
        "provider_ttfb": ttfb,
        "errors": sum(1 for e in record["events"] if e["type"] == "error"),
    }


def summary_line(record: Mapping[str, Any], path: Path | None = None) -> str:
    """One ``key=value`` line per call: grep-able in text logs, parseable in JSON ones."""
    s = record["summary"]
    parts = [
        f"duration={record['duration_secs']:.1f}s",
        f"turns={s['turns']}",
        f"answered={s['answered']}",
        f"interruptions={s['interruptions']}",
        f"holding_phrases={s['holding_phrases']}",
    ]
    for key, name in (
        ("response_latency", "response"),
        ("holding_latency", "holding"),
        ("clear_latency", "clear"),
    ):
        if s[key]:
            parts.append(f"{name}_p50={s[key]['p50_ms']}ms {name}_max={s[key]['max_ms']}ms")
    for provider, v in s["provider_ttfb"].items():
        parts.append(f"ttfb[{provider}]_p50={v['p50_ms']}ms")
    if s["errors"]:
        parts.append(f"errors={s['errors']}")
    parts.append(f"end_reason={json.dumps(record['end_reason'])}")
    parts.append(f"hung_up_by={record['hung_up_by']}")
    if path is not None:
        parts.append(f"record={path}")
    return "call summary: " + " ".join(parts)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@dataclass
class StereoAudio:
    """Caller (left) and bot (right) int16 tracks at ``rate`` on the call's timeline."""

    caller: np.ndarray
    bot: np.ndarray
    rate: int


def _place_caller(frames: Sequence[tuple[float, bytes, int]], rate: int) -> np.ndarray:
    """Caller audio on the stream's own clock, anchored as late as its arrivals allow.

    Exotel streams continuously (silence included), so within the stream sample count is the
    truth and arrival times only bound it: audio cannot arrive before it was spoken. Frames
    read late (buffered while the pipeline started, or in a burst after a stalled event loop)
    are therefore placed by the earliest-arriving ones: anchor = min(arrival - audio so far).
    A real gap in the stream shows as lateness that rises and stays up for CALLER_RESYNC_SECS
    (a burst drains); the track restarts there with a new anchor. 24 kHz calls are heard at
    16 kHz; the track is resampled once, at the end.
    """
    if not frames:
        return np.zeros(0, "<i2")
    in_rate = frames[0][2]
    chunks = [np.frombuffer(pcm, "<i2") for _, pcm, _ in frames]
    secs = np.array([len(c) / in_rate for c in chunks])
    ends = np.cumsum(secs)
    slack = np.array([t for t, _, _ in frames]) - ends  # the stream's start, by each frame
    anchors = np.empty_like(slack)
    for a, b in _continuous_runs(slack, float(np.median(secs)) or 0.1):
        anchors[a:b] = slack[a:b].min()
    starts = np.round((anchors + ends - secs) * in_rate).astype(int)
    track = _assemble(list(zip(starts.tolist(), chunks, strict=True)))
    if in_rate != rate:
        import soxr

        track = soxr.resample(track, in_rate, rate).astype("<i2")
    return track


def _continuous_runs(slack: np.ndarray, frame_secs: float) -> list[tuple[int, int]]:
    """Index ranges of the stream between real gaps (see ``_place_caller``)."""
    window = max(1, round(CALLER_RESYNC_SECS / frame_secs))
    padded = np.concatenate([slack, np.full(window - 1, np.inf)])
    future_min = np.lib.stride_tricks.sliding_window_view(padded, window).min(axis=1)
    runs, first, past_min = [], 0, slack[0]
    for i in range(1, len(slack)):
        if future_min[i] > past_min + CALLER_GAP_SECS:
            runs.append((first, i))
            first, past_min = i, slack[i]
        else:
            past_min = min(past_min, slack[i])
    runs.append((first, len(slack)))
    return runs


def _place_bot(
    chunks: Sequence[tuple[tuple[float, int], bytes]], clears: Sequence[float], rate: int
) -> np.ndarray:
    """Bot chunks played back to back from their arrival, as Exotel's player does; a clear
    drops every chunk that had not started playing by then."""
    pieces: list[tuple[int, np.ndarray]] = []
    queue_end = 0.0
    pending = sorted(clears)
    for (arrival, _size), pcm in chunks:
        while pending and pending[0] <= arrival:
            pending.pop(0)  # cut chunks never moved queue_end: it is the last played chunk's
        start = max(arrival, queue_end)
        if pending and start > pending[0] + EPSILON:
            continue  # cleared before it started playing
        samples = np.frombuffer(pcm, "<i2")
        pieces.append((round(start * rate), samples))
        queue_end = start + len(samples) / rate
    return _assemble(pieces)


def _assemble(pieces: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """One track from (start sample, samples) pieces; anything before the call start is cut."""
    end = max((at + len(s) for at, s in pieces), default=0)
    track = np.zeros(max(0, end), "<i2")
    for at, samples in pieces:
        if at < 0:
            samples, at = samples[-at:], 0
        track[at : at + len(samples)] = samples
    return track


def build_stereo(
    caller_frames: Sequence[tuple[float, bytes, int]],
    bot_chunks: Sequence[tuple[tuple[float, int], bytes]],
    clears: Sequence[float],
    *,
    rate: int,
) -> StereoAudio:
    """Both sides of the call on one timeline at the call's rate (the bot's rate)."""
    caller = _place_caller(caller_frames, rate)
    bot = _place_bot(bot_chunks, clears, rate)
    return StereoAudio(caller=caller, bot=bot, rate=rate)


def record_path(records_dir: Path, record: Mapping[str, Any]) -> Path:
    """``<dir>/<UTC date>/<call_sid>.json``; ``<call_sid>.<stream_sid>.json`` if taken.

    One folder per day keeps listings short on a busy line and makes retention a matter of
    deleting old folders; the call_sid is what the operator searches by. One call can run
    several streams (two Voicebot applets in a flow), hence the stream fallback. Ids come
    from the network, so anything outside [A-Za-z0-9_.-] is replaced (no path traversal).
    """
    day = str(record["started_at"])[:10]
    call = _safe_name(record["call_sid"]) or "unknown-call"
    folder = records_dir / day
    path = folder / f"{call}.json"
    if path.exists():
        path = folder / f"{call}.{_safe_name(record['stream_sid']) or 'stream'}.json"
    return path


def _safe_name(value: Any) -> str:
    return _UNSAFE_FILENAME.sub("_", str(value or ""))[:128].lstrip(".")


def write_record(
    record: dict[str, Any], records_dir: Path, audio: StereoAudio | None = None
) -> Path:
    """Write the recording (if any), then the JSON, each atomically (temp file + rename).

    The JSON goes last, so a record on disk always has its complete recording beside it.
    """
    path = record_path(Path(records_dir), record)
    path.parent.mkdir(parents=True, exist_ok=True)
    if audio is not None:
        wav_path = path.with_suffix(".wav")
        _atomic_write(wav_path, lambda f: _write_wav(f, audio))
        record = {**record, "audio_file": wav_path.name}
    text = json.dumps(record, indent=1, ensure_ascii=False)
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_wav(f: Any, audio: StereoAudio) -> None:
    n = max(len(audio.caller), len(audio.bot))
    stereo = np.zeros((n, 2), "<i2")
    stereo[: len(audio.caller), 0] = audio.caller
    stereo[: len(audio.bot), 1] = audio.bot
    with wave.open(f, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(audio.rate)
        wav.writeframes(stereo.tobytes())


# --------------------------------------------------------------------------------------------
# Report: a record drawn like a simulated call
# --------------------------------------------------------------------------------------------


def record_to_recording(record: Mapping[str, Any]) -> CallRecording:
    """The record as a ``bot.simulator.client.CallRecording``, so ``bot.simulator.report`` draws it.

    Bot audio is replayed through the simulator's model of Exotel's player (chunks back to
    back, ``clear`` drops what has not started, marks echo when their audio has played), so
    the picture means the same thing for both. Audio tracks are left empty.
    """
    from bot.simulator.client import CallRecording, DtmfRecord, ExotelPlayer, chunk_size_problems

    rate = int(record["sample_rate"])
    duration = float(record["duration_secs"] or 0.0)
    player = _replay_player(ExotelPlayer(rate), record, duration)
    sizes = [n for _, n in record.get("bot_audio_chunks", [])]
    violations = [
        f"media of {size} B: {problem}"
        for size in sorted(set(sizes))
        for problem in chunk_size_problems(size, rate)
    ]
    events = record.get("events", [])
    turns = [_sim_turn(turn) for turn in record.get("turns", [])]
    _add_talk_over(turns, player.chunks)
    values = {
        "url": f"call record {record['call_sid']}",
        "sample_rate": rate,
        "stream_sid": record["stream_sid"],
        "call_sid": record["call_sid"],
        "account_sid": record.get("account_sid", ""),
        "started_at": datetime.fromisoformat(record["started_at"]).timestamp(),
        "duration_secs": duration,
        "handshake_secs": None,
        "connect_error": None,
        "closed_by": record.get("hung_up_by") or "timeout",
        "close_code": None,
        "close_reason": record.get("end_reason"),
        "messages": _messages(record),
        "chunks": player.chunks,
        "utterances": player.utterances,
        "marks": player.marks,
        "clears": list(player.clears),
        "dtmf": [DtmfRecord(e["t"], e["digit"], 0) for e in events if e["type"] == "dtmf"],
        "turns": turns,
        "underruns": player.underruns,
        "leads": player.leads,
        "media_sizes": sizes,
        "violations": violations,
        "script_warnings": [],
        "caller_audio": np.zeros(0, np.int16),
        "bot_audio": np.zeros(0, np.int16),
    }
    # Only the fields this version of the simulator has (its recording is still growing).
    names = {f.name for f in dataclasses.fields(CallRecording)}
    return CallRecording(**{k: v for k, v in values.items() if k in names})


def _replay_player(player: Any, record: Mapping[str, Any], duration: float) -> Any:
    """Feed chunk arrivals, marks, echoes and clears to the player in time order."""
    timeline: list[tuple[float, int, str, Any]] = []
    for t, size in record.get("bot_audio_chunks", []):
        timeline.append((t, 0, "chunk", size))
    for e in record.get("events", []):
        if e["type"] in ("mark_sent", "mark_echoed"):
            timeline.append((e["t"], 1, e["type"], e.get("name", "")))
    for t in record.get("clears", []):
        timeline.append((t, 2, "clear", None))
    marks: dict[str, Any] = {}
    for t, _, kind, value in sorted(timeline, key=lambda item: item[:2]):
        player.check_idle(t)
        if kind == "chunk":
            player.add_chunk(t, value)
        elif kind == "mark_sent":
            marks[value] = player.add_mark(t, value)
        elif kind == "mark_echoed" and value in marks:
            player.fire_mark(t, marks[value])
        elif kind == "clear":
            player.clear(t)
    player.close(duration)  # audio still queued when the call ended was never heard
    return player


def _messages(record: Mapping[str, Any]) -> list[Any]:
    """Per-event message counts as the simulator keeps them (times unknown: 0)."""
    from bot.simulator.client import MessageRecord

    out = [
        MessageRecord(0.0, "to_bot", event, 0)
        for event, n in record.get("inbound_events", {}).items()
        if not event.startswith("rejected:")
        for _ in range(n)
    ]
    sent = {
        "media": len(record.get("bot_audio_chunks", [])),
        "mark": sum(1 for e in record.get("events", []) if e["type"] == "mark_sent"),
        "clear": len(record.get("clears", [])),
    }
    out += [MessageRecord(0.0, "from_bot", event, 0) for event, n in sent.items() for _ in range(n)]
    return out


def _sim_turn(turn: Mapping[str, Any]) -> Any:
    from bot.simulator.client import Turn

    start = turn.get("speech_start")
    end = turn.get("speech_end")
    return Turn(
        index=turn["index"],
        kind="barge_in" if turn.get("bot_speaking_at_onset") else "say",
        label=turn.get("heard") or f"turn {turn['index'] + 1}",
        text=turn.get("heard") or None,
        audio_start=start or 0.0,
        audio_end=end or start or 0.0,
        speech_start=start,
        speech_end=end,
        bot_speaking_at_onset=bool(turn.get("bot_speaking_at_onset")),
        first_bot_audio=turn.get("first_bot_audio"),
        latency_secs=turn.get("response_latency"),
        interrupted=bool(turn.get("interrupted")),
        clear_at=turn.get("clear_at"),
        clear_latency_secs=turn.get("clear_latency"),
    )


def _add_talk_over(turns: Sequence[Any], chunks: Sequence[Any]) -> None:
    """Bot audio the caller heard over themselves: from their onset to the bot's answer (or
    the next turn), as the simulator defines it."""
    for i, turn in enumerate(turns):
        if turn.speech_start is None:
            continue
        following = turns[i + 1].speech_start if i + 1 < len(turns) else None
        until = turn.first_bot_audio or following or float("inf")
        turn.bot_audio_after_onset_secs = sum(
            max(0.0, min(c.played_end, until) - max(c.start, turn.speech_start)) for c in chunks
        )


def record_transcript(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What ``bot.simulator.report.format_report`` takes as ``transcript``: heard / answered /
    hold."""
    return [
        {
            "heard": t.get("heard") or None,
            "answered": t.get("answered") or t.get("spoken") or None,
            "holding_phrase": bool(t.get("holding_phrase")),
        }
        for t in record.get("turns", [])
    ]


def record_annotations(
    record: Mapping[str, Any], default_secs: float = 1.0
) -> list[tuple[float, float, str]]:
    """Holding phrases as ``(start, end, text)`` spans for the timeline's holding lane."""
    return [
        (h["t"], h["t"] + (h.get("secs") or default_secs), h.get("text", ""))
        for t in record.get("turns", [])
        for h in t.get("holding") or ()
    ]


def load_record(path: Path | str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "call_sid" not in data or "turns" not in data:
        raise ValueError(f"{path} is not a call record (no call_sid / turns)")
    return data


def run_report(record_file: Path | str, png: Path | str | None = None) -> int:
    """Print the record's table and compliance summary; draw its timeline PNG."""
    from bot.simulator.report import format_report, write_timeline_png

    try:
        record = load_record(record_file)
    except (OSError, ValueError) as e:
        print(f"cannot read the call record: {e}", file=sys.stderr)
        return 2
    recording = record_to_recording(record)
    print(format_report(recording, record_transcript(record)), end="")
    out = Path(png) if png else Path(record_file).with_suffix(".png")
    write_timeline_png(recording, out, record_annotations(record))
    print(f"timeline: {out}")
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("record", type=Path, help="a call record (CALL_RECORDS_DIR/.../*.json)")
    parser.add_argument(
        "--png", type=Path, help="where to draw the timeline (default: next to the record)"
    )


def report_main(argv: Sequence[str] | None = None) -> int:
    """``python -m bot report CALL.json [--png out.png]``."""
    parser = argparse.ArgumentParser(
        prog="python -m bot report", description="Render a call record as a table and timeline."
    )
    add_report_arguments(parser)
    args = parser.parse_args(argv)
    return run_report(args.record, args.png)
