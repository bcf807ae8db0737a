"""The per-call observer: builds a call's record from the frames Pipecat pushes.

``CallObserver`` (one per call) watches frames, feeds the Prometheus histograms of
``bot.observability.metrics.Metrics`` live, and at the end logs one INFO summary line and
writes the record (``bot.observability.records.serialise``), every configured secret redacted.
``watch_call`` wires one to a built ``bot.telephony.call.CallSession``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

from bot.observability.records.model import (
    BARGE_IN_WINDOW_SECS,
    CLEAR_BEFORE_ONSET_SECS,
    EPSILON,
    RECORD_VERSION,
    CallInfoLike,
    TurnRecord,
    provider_label,
    round_ms,
    summarize,
    summary_line,
)
from bot.observability.records.redaction import MASK, Redactor, mask_values
from bot.observability.records.serialise import StereoAudio, build_stereo, write_record

if TYPE_CHECKING:
    from bot.observability.metrics import Metrics

_DOWN = FrameDirection.DOWNSTREAM  # a module constant: Enum attribute lookups are slow

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
        # A turn's heard text -> its language (the call's language state); None: not recorded.
        self.turn_language: Callable[[str], str | None] | None = None
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
        button = str(getattr(data.frame.button, "value", data.frame.button))
        # Keypad digits may be a PIN: the record keeps that a key was pressed, never which
        # digit (# and * are kept: they say how an entry ended).
        self._event(t, "dtmf", digit=MASK if button.isdigit() else button)

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
        hold = {"t": round_ms(at), "text": text, "secs": round_ms(secs)}
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
        self.events.append({"t": round_ms(t), "type": kind, **details})

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

    def build_record(
        self,
        end_reason: str | None,
        hung_up_by: str | None,
        agent: dict[str, Any] | None = None,
        masked: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The call's record as JSON-ready data, secrets redacted. ``agent``: the agent's part
        (outcome, tool calls, variables: bot.agent); ``masked``: keypad entries to mask."""
        self._settle(final=True)
        if self.turn_language is not None:
            for turn in self.turns:
                turn.language = self.turn_language(" ".join(turn.heard))
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
            "duration_secs": round_ms(duration),
            "end_reason": end_reason,
            "hung_up_by": hung_up_by,
            "turns": [turn.to_json() for turn in self.turns],
            # The language of every turn, for the post-call payload's data.languages.
            "languages": [turn.language for turn in self.turns if turn.language],
            "events": sorted(self.events, key=lambda e: e["t"]),
            "bot_speech": [[round_ms(a), round_ms(b)] for a, b in self.bot_speech],
            "bot_audio_chunks": [[round_ms(t), n] for t, n in self.bot_chunks],
            "clears": [round_ms(c) for c in self.clears],
            "provider_ttfb": {k: [round_ms(v) for v in vs] for k, vs in sorted(self.ttfb.items())},
            "inbound_events": dict(getattr(self._serializer, "counters", {}) or {}),
            "outbound_chunk_sizes": _size_counts(getattr(self._output, "sent_chunks", None)),
        }
        if agent is not None:
            record["outcome"] = agent.get("outcome")
            record["agent"] = agent
            record["captures"] = agent.get("captures") or {}
        record["summary"] = summarize(record)
        return mask_values(self.redactor.tree(record), masked)

    async def finish(
        self,
        end_reason: str | None,
        hung_up_by: str | None,
        *,
        agent: dict[str, Any] | None = None,
        masked: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Log the summary line and write the record (and recording); never raises.

        Call it inside the call's ``logger.contextualize`` block so the line carries the ids
        (the worker thread inherits them). Building and writing run off the event loop: a
        long call's record and recording take milliseconds to seconds, and other calls'
        audio must not wait for them.
        """
        try:
            record, path = await asyncio.to_thread(
                self._build_and_write, end_reason, hung_up_by, agent, masked
            )
        except Exception:
            logger.exception("call record failed")
            return {}
        logger.info(self.redactor.text(summary_line(record, path)))
        return record

    def _build_and_write(
        self,
        end_reason: str | None,
        hung_up_by: str | None,
        agent: dict[str, Any] | None = None,
        masked: Sequence[str] = (),
    ) -> tuple[dict[str, Any], Path | None]:
        record = self.build_record(end_reason, hung_up_by, agent, masked)
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
