"""One outbound call while it is live: its variables, who answered, opt-outs, the end report.

The server finds out at the stream's ``start`` whether the dialer placed the call
(:func:`outbound_call_for`: the ``CustomField`` custom parameter, or the CallSid the API
answered with), puts the call's variables where the call reads its custom parameters, and
adds :class:`AnswerGate` to the pipeline between the STT and the user aggregator. The gate:

* holds the greeting until the callee says something human ("hello", "haan ji") or the line
  stays quiet for a moment, and never releases it while the callee is still talking;
* keeps the callee's first words (the "hello", a carrier announcement) away from the LLM, so
  the bot answers a "hello" with its greeting, not with a reply to "hello";
* ends the call without a word when the first seconds are a carrier announcement, voicemail
  or an IVR (:class:`~bot.dialer.answered.AnswerDetector`, within 8 s of ``start``);
* records an opt-out ("don't call me again", Hindi too) under ``dialer:optout:{phone}`` at
  once, so every campaign skips the number, and ends the call politely.

When the stream ends, :meth:`OutboundCall.finish` reports the outcome to the campaign
(:func:`~bot.dialer.status.publish_stream_end`). Telephony never imports this module: the
server builds it and hands the gate to the call as an input processor.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from typing import Any, Protocol

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterimTranscriptionFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.dialer.answered import AnswerDecision, AnswerDetector, is_opt_out
from bot.dialer.campaign_state import optout_key
from bot.dialer.status import StreamEndEvent, publish_stream_end
from bot.dialer.variables import call_record
from bot.state.base import StateStore

LOOKUP_TIMEOUT_SECS = 2.0
"""The store lookup at ``start`` runs inside Exotel's 10 s handshake budget; a slow store
makes the call an ordinary (inbound-like) one rather than a late one."""

TICK_SECS = 0.1
OPT_OUT_GOODBYE = "Sorry to have disturbed you. We will not call you again. Goodbye."
CUSTOM_FIELD = "customfield"


class CallControl(Protocol):
    """What the gate asks of the call (``bot.telephony.call.CallSession`` has these)."""

    async def greet(self) -> None: ...

    async def hang_up(self, reason: str) -> None: ...

    async def end_call(self, reason: str, goodbye: str | None = None) -> None: ...


class StreamStart(Protocol):
    """The parts of the stream's ``start`` used here (``bot.telephony.call.CallInfo``)."""

    call_sid: str
    from_number: str
    custom_parameters: MutableMapping[str, Any]


def custom_field_of(custom_parameters: MutableMapping[str, Any]) -> str | None:
    """The ``CustomField`` custom parameter, whatever case the flow gave its name."""
    for key, value in custom_parameters.items():
        if str(key).lower() == CUSTOM_FIELD and value:
            return str(value)
    return None


class OutboundCall:
    """The dialer's view of one live outbound call; see the module docstring."""

    def __init__(
        self,
        store: StateStore,
        call_sid: str,
        custom_field: str | None,
        meta: dict[str, Any],
        *,
        phone: str | None = None,
        detector: AnswerDetector | None = None,
    ) -> None:
        self.store = store
        self.call_sid = call_sid
        self.custom_field = custom_field
        self.meta = meta
        self.phone = str(meta.get("phone") or phone or "") or None
        self.detector = detector or AnswerDetector()
        self.opt_out = False
        self.started_at = time.monotonic()
        self.control: CallControl | None = None
        self.gate = AnswerGate(self)
        self._greet_pending = False
        self._speaking = False

    def attach(self, control: CallControl) -> None:
        self.control = control

    @property
    def processors(self) -> list[FrameProcessor]:
        """What the call puts between its STT and its user aggregator."""
        return [self.gate]

    @property
    def outcome(self) -> str:
        decision = self.detector.decision
        return decision.outcome if decision is not None else "completed"

    def elapsed(self) -> float:
        """Seconds since the stream's ``start`` (the gate is built right after it)."""
        return time.monotonic() - self.started_at

    # -- events from the gate ------------------------------------------------------------------

    async def on_speech(self, started: bool) -> None:
        self._speaking = started
        t = self.elapsed()
        decision = self.detector.on_speech_start(t) if started else self.detector.on_speech_stop(t)
        await self._apply(decision)
        if not started and self._greet_pending:
            await self._greet()

    async def on_tick(self) -> None:
        await self._apply(self.detector.tick(self.elapsed()))

    async def on_transcript(self, text: str) -> bool:
        """A final transcript of the callee; True when it must not reach the LLM."""
        if is_opt_out(text):
            await self._opted_out()
            return True
        held = not self.detector.greeted
        decision = self.detector.on_transcript(text, self.elapsed())
        await self._apply(decision)
        return held or bool(decision and decision.end_call)

    @property
    def holding(self) -> bool:
        """Still deciding who answered and not greeted yet: transcripts are kept back."""
        return not self.detector.greeted and self.detector.decision is None

    async def _apply(self, decision: AnswerDecision | None) -> None:
        if decision is None or self.control is None:
            return
        if decision.end_call:
            logger.info(f"outbound call answered by {decision.kind}: hanging up")
            await self.control.hang_up(f"answered by {decision.kind}")
        elif decision.greet:
            if self._speaking:
                self._greet_pending = True  # never over the callee's "hello"
            else:
                await self._greet()

    async def _greet(self) -> None:
        self._greet_pending = False
        if self.control is not None:
            await self.control.greet()

    async def _opted_out(self) -> None:
        if self.opt_out:
            return
        self.opt_out = True
        logger.info("the callee asked not to be called again; opt-out recorded")
        if self.phone:
            record = {"campaign": self.meta.get("campaign"), "call": self.call_sid}
            try:
                await self.store.set(optout_key(self.phone), json.dumps(record))
            except Exception:  # the end report carries it too; the campaign records it then
                logger.exception("could not record the opt-out now; the end report carries it")
        if self.control is not None:
            await self.control.end_call("callee opted out", goodbye=OPT_OUT_GOODBYE)

    # -- the end -------------------------------------------------------------------------------

    async def finish(self, duration_secs: float | None = None, transferred: bool = False) -> None:
        """Report the stream's end to the campaign (or to the single call's result)."""
        event = StreamEndEvent(
            call_sid=self.call_sid,
            custom_field=self.custom_field,
            outcome=self.outcome,
            opt_out=self.opt_out,
            transferred=transferred,
            duration_secs=None if duration_secs is None else round(duration_secs, 2),
        )
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_SECS * 2):
                await publish_stream_end(self.store, event)
        except Exception:
            # The terminal status callback still settles the attempt in the campaign.
            logger.exception("could not publish the stream end; the status callback will settle it")


async def outbound_call_for(store: StateStore, start: StreamStart) -> OutboundCall | None:
    """The dialled call this stream belongs to, or None (an inbound call, or a store problem).

    Puts the call's stored variables into ``start.custom_parameters`` (where the call's
    templating reads them); the token stays there as ``CustomField``.
    """
    custom_field = custom_field_of(start.custom_parameters)
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_SECS):
            record = await call_record(store, custom_field, start.call_sid)
    except Exception:
        logger.exception("could not look the stream up in the dialer's store; taken as inbound")
        return None
    if record is None:
        return None
    variables = {str(k): str(v) for k, v in (record.get("variables") or {}).items()}
    start.custom_parameters.update(variables)
    meta = dict(record.get("meta") or {})
    logger.info(
        f"outbound call (campaign {meta.get('campaign') or '-'}): "
        f"{len(variables)} variables, greeting held until the callee answers"
    )
    return OutboundCall(
        store, start.call_sid, record.get("token"), meta, phone=start.from_number or None
    )


class AnswerGate(FrameProcessor):
    """Between the STT and the user aggregator of an outbound call; see the module docstring."""

    def __init__(self, call: OutboundCall) -> None:
        super().__init__(name="AnswerGate")
        self.call = call
        self._ticker: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._ticker = self.create_task(self._tick(), name="answer-gate-tick")
        elif isinstance(frame, EndFrame | CancelFrame):
            await self._stop_ticker()
        elif isinstance(frame, VADUserStartedSpeakingFrame | VADUserStoppedSpeakingFrame):
            # Broadcast by the user aggregator: the copy travelling upstream passes here.
            if direction == FrameDirection.UPSTREAM:
                await self.call.on_speech(isinstance(frame, VADUserStartedSpeakingFrame))
        elif isinstance(frame, TranscriptionFrame):
            if await self.call.on_transcript(frame.text):
                return
        elif isinstance(frame, InterimTranscriptionFrame) and self.call.holding:
            return
        await self.push_frame(frame, direction)

    async def _tick(self) -> None:
        detector = self.call.detector
        while detector.decision is None or not detector.decision.final:
            await asyncio.sleep(TICK_SECS)
            await self.call.on_tick()

    async def _stop_ticker(self) -> None:
        if self._ticker is not None:
            await self.cancel_task(self._ticker)
            self._ticker = None

    async def cleanup(self) -> None:
        await self._stop_ticker()
        await super().cleanup()
