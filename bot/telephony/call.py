"""One call: handshake (connected, start) -> CallInfo -> pipeline -> teardown.

The call controller owns the call's life: it reads Exotel's handshake, builds the pipeline,
speaks the greeting, ends the call politely when asked (goodbye, mark, echo, close), and
tears everything down at once when the caller hangs up. A hang-up is a normal event: it is
logged at INFO and never as an error.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from functools import partial

from fastapi import WebSocket, WebSocketDisconnect
from loguru import logger
from pipecat.frames.frames import EndFrame, TTSSpeakFrame, UserIdleTimeoutUpdateFrame
from pipecat.workers.runner import WorkerRunner

from bot.config import Settings
from bot.conversation.faults import FaultWatchdog
from bot.conversation.holding import HoldingPhraseProcessor, holding_processor_for_call
from bot.conversation.language import holding_cache_for, language_for_call
from bot.conversation.pipeline import CallPipeline, build_call_pipeline, pipeline_input_rate
from bot.providers import ProviderChoice, ProviderContext, SharedResources
from bot.telephony.transport import ExotelTransport, exotel_params
from serializers.exotel import (
    ExotelFrameSerializer,
    ExotelProtocolError,
    ExotelStart,
    decode_message,
    parse_start,
)

# How long the bot may stay silent before we stop waiting for a goodbye it was asked to say.
GOODBYE_START_SECS = 3.0


@dataclass
class CallInfo(ExotelStart):
    """Who is calling (from Exotel's ``start``) and the rate the stream runs at."""

    sample_rate: int = 8000

    @classmethod
    def from_start(cls, start: ExotelStart, sample_rate: int) -> CallInfo:
        return cls(**asdict(start), sample_rate=sample_rate)

    @property
    def in_rate(self) -> int:
        return pipeline_input_rate(self.sample_rate)


async def read_handshake(websocket: WebSocket, sample_rate: int, timeout: float) -> CallInfo | None:
    """Read messages until Exotel's ``start``; None if the peer leaves or stays silent.

    ``connected`` is expected first but not required. Media before ``start`` has no call to
    belong to and is dropped with one log line; so is anything malformed.
    """
    deadline = time.monotonic() + timeout
    dropped = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            logger.warning(f"no start event within {timeout:.0f} s of connecting; closing")
            return None
        try:
            message = await asyncio.wait_for(websocket.receive(), remaining)
        except TimeoutError:
            continue
        except (WebSocketDisconnect, RuntimeError):
            logger.info("Exotel closed the socket before start")
            return None
        if message.get("type") == "websocket.disconnect":
            logger.info(f"Exotel closed the socket before start (code {message.get('code')})")
            return None
        data = message.get("text") if message.get("text") is not None else message.get("bytes")
        try:
            event = decode_message(data or "")
            if event["event"] == "start":
                start = parse_start(event)
                break
            if event["event"] != "connected":
                dropped += 1
                if dropped == 1:
                    logger.warning(f"{event['event']!r} before start dropped (no call yet)")
        except ExotelProtocolError as e:
            logger.warning(f"handshake message dropped: {e}")
    if start.media_sample_rate and start.media_sample_rate != sample_rate:
        logger.warning(
            f"start.media_format says {start.media_sample_rate} Hz but the URL asked for "
            f"{sample_rate} Hz; using {sample_rate} Hz (the URL is what Exotel streams)"
        )
    if dropped > 1:
        logger.warning(f"{dropped} messages before start dropped in all")
    return CallInfo.from_start(start, sample_rate)


def make_fault_watchdog(
    settings: Settings, end_call, holding: HoldingPhraseProcessor | None
) -> FaultWatchdog | None:
    """The call's provider-fault watchdog; the apology plays from the phrase cache."""
    say = partial(holding.say, append_to_context=False) if holding else None
    return FaultWatchdog.from_settings(settings, end_call=end_call, say=say)


class CallSession:
    """Runs one call's pipeline and ends it the right way for each reason."""

    holding: HoldingPhraseProcessor | None = None  # plays cached phrases; None without a cache

    def __init__(
        self,
        websocket: WebSocket,
        info: CallInfo,
        settings: Settings,
        choice: ProviderChoice,
        shared: SharedResources,
        *,
        extra_processors: list | None = None,
        observers: list | None = None,
        vad_analyzer=None,
    ) -> None:
        self.info = info
        self.settings = settings
        self.started_at = time.monotonic()
        self.end_reason: str | None = None
        self.hung_up_by: str | None = None
        self._ending = False
        self._end_task: asyncio.Task | None = None
        self._idle_prompts = 0
        self.serializer = ExotelFrameSerializer(
            info.stream_sid, info.call_sid, sample_rate=info.sample_rate
        )
        self.transport = ExotelTransport(
            websocket, self.serializer, exotel_params(info.sample_rate)
        )
        # The call's language (bot.conversation.language): providers, phrases, switches.
        self.languages = language_for_call(info, websocket, settings, shared)
        self.language = self.languages.state  # .phrases: greeting, goodbye... in its language
        ctx = ProviderContext(
            settings=settings,
            in_rate=info.in_rate,
            out_rate=info.sample_rate,
            shared=shared,
            end_call=self.end_call,
            **self.languages.provider_fields,
        )
        self.holding = holding_processor_for_call(
            settings,
            holding_cache_for(shared, self.language.language),
            self.language.phrases.holding,
        )
        # Last before the output: it must see holding phrases to tell them from answers.
        self.faults = make_fault_watchdog(settings, self.end_call, self.holding)
        if self.faults:
            self.faults.apology = self.language.phrases.apology
        extra = [
            *(extra_processors or []),
            *([self.holding] if self.holding else []),
            *([self.faults] if self.faults else []),
        ]
        self.pipeline: CallPipeline = build_call_pipeline(
            self.transport,
            choice,
            ctx,
            extra_processors=extra,
            observers=observers,
            vad_analyzer=vad_analyzer,
            around_user=self.languages.around_user,
        )
        self.languages.bind(self.pipeline, self.holding, shared, self.faults)
        if self.faults:
            self.faults.watch(self.worker)
        self._wire_events()

    @property
    def worker(self):
        return self.pipeline.worker

    def _wire_events(self) -> None:
        @self.transport.event_handler("on_client_connected")
        async def _greet(_transport, _ws) -> None:
            await self._speak(self.language.phrases.greeting)

        user = self.pipeline.aggregators.user()

        @user.event_handler("on_user_turn_idle")
        async def _caller_silent(_aggregator) -> None:
            if self._ending or (self.holding and self.holding.waiting_for_answer):
                return  # after a holding phrase the bot, not the caller, is the one silent
            self._idle_prompts += 1
            if self._idle_prompts == 1:
                logger.info(f"caller silent for {self.settings.idle_prompt_secs:.0f} s; prompting")
                await self._speak(self.language.phrases.idle_prompt)
                timeout = self.settings.idle_hangup_secs
                await self.worker.queue_frame(UserIdleTimeoutUpdateFrame(timeout=timeout))
            else:
                await self.end_call("caller silent", goodbye=self.language.phrases.goodbye)

        @user.event_handler("on_user_turn_started")
        async def _caller_spoke(_aggregator, _strategy) -> None:
            if self._idle_prompts:
                self._idle_prompts = 0
                timeout = self.settings.idle_prompt_secs
                await self.worker.queue_frame(UserIdleTimeoutUpdateFrame(timeout=timeout))

        @self.transport.event_handler("on_client_disconnected")
        async def _hung_up(_transport, _ws) -> None:
            reason = self.serializer.stop_reason
            self._mark_end(
                f"caller hung up (stop: {reason})" if reason else "socket closed without stop",
                by="caller",
            )
            await self.worker.cancel()

    async def run(self) -> None:
        """Run until the call ends, whoever ends it."""
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        cap = asyncio.get_running_loop().call_later(self.settings.max_call_secs, self._cap_reached)
        try:
            await runner.run()
        finally:
            cap.cancel()
            if self._end_task and not self._end_task.done():
                self._end_task.cancel()
            if self.serializer.stop_reason and not self.end_reason:
                self._mark_end(f"caller hung up (stop: {self.serializer.stop_reason})", "caller")
            self._mark_end("pipeline finished", by="bot")
            logger.info(
                f"call ended after {time.monotonic() - self.started_at:.1f} s: "
                f"{self.end_reason} (by {self.hung_up_by})"
            )

    def _cap_reached(self) -> None:
        logger.info(f"call reached the {self.settings.max_call_secs:.0f} s cap; saying goodbye")
        self._begin_ending("call length cap", self.language.phrases.goodbye)

    def _mark_end(self, reason: str, by: str) -> None:
        if self.end_reason is None:
            self.end_reason, self.hung_up_by = reason, by

    async def end_call(self, reason: str, goodbye: str | None = None) -> None:
        """End the call from the bot's side once the caller has heard the last words.

        Returns at once: the ending runs in a task of the call's own, because callers of this
        hook (the LLM's function handler, the scripted responder) run in pipeline tasks that
        a barge-in cancels, and an ending cancelled half-way would leave the call open.
        """
        self._begin_ending(reason, goodbye)

    def _begin_ending(self, reason: str, goodbye: str | None) -> None:
        if self._ending:
            return
        self._ending = True
        if self.faults:
            self.faults.stand_down()  # silence is expected from now on
        self._mark_end(reason, by="bot")
        logger.info(f"ending the call: {reason}")
        self._end_task = asyncio.create_task(self._end(goodbye), name="end-call")

    async def _end(self, goodbye: str | None) -> None:
        """Goodbye (if given, or if the bot said nothing after being asked to end) -> the
        utterance's mark -> Exotel's echo of it (bounded by the audio still queued plus a
        margin) -> EndFrame, which closes the socket so the Exotel flow moves on."""
        out = self.transport.output()
        asked_at = time.monotonic()
        if goodbye:
            await self._speak(goodbye)
        heard = await self._wait_until_heard(asked_at)
        if not heard and not goodbye:
            # The bot was asked to end without a goodbye and said nothing: say ours.
            await self._speak(self.language.phrases.goodbye)
            heard = await self._wait_until_heard(time.monotonic())
        if not heard:
            logger.warning("goodbye not confirmed by Exotel in time; closing anyway")
        logger.debug(f"closing with {out.playout_remaining_secs:.2f} s of audio unplayed")
        await self.worker.queue_frame(EndFrame())

    async def _speak(self, text: str) -> None:
        """Say ``text``: the pre-rendered audio if cached (instant), else through the TTS."""
        if text and not (self.holding and await self.holding.say(text)):
            await self.worker.queue_frame(TTSSpeakFrame(text))

    async def _wait_until_heard(self, since: float) -> bool:
        """True once an utterance that started after ``since`` has been played out."""
        out = self.transport.output()
        budget = self.settings.provider_timeout_secs + 2.0
        start_deadline = since + GOODBYE_START_SECS
        while time.monotonic() < since + budget + out.playout_remaining_secs:
            if out.last_echo_at > since and not out.busy:
                return True
            if out.last_audio_at < since and not out.busy and time.monotonic() > start_deadline:
                return False  # nothing was said
            await asyncio.sleep(0.05)
        return False
