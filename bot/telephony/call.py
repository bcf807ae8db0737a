"""One call: handshake (connected, start) -> CallInfo -> pipeline -> teardown.

The call controller owns the call's life: it reads Exotel's handshake, builds the pipeline,
speaks the greeting, ends the call politely when asked (goodbye, mark, echo, close), and
tears everything down at once when the caller hangs up. A hang-up is a normal event: it is
logged at INFO and never as an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial

from fastapi import WebSocket, WebSocketDisconnect
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    LLMUpdateSettingsFrame,
    TTSSpeakFrame,
    UserIdleTimeoutUpdateFrame,
)
from pipecat.services.settings import LLMSettings
from pipecat.workers.runner import WorkerRunner

from bot.agent import AgentConfig, TransferRequest
from bot.agent.session import CallAgent
from bot.config import Settings
from bot.conversation.faults import FaultWatchdog
from bot.conversation.holding import HoldingPhraseProcessor, holding_processor_for_call
from bot.conversation.language import holding_cache_for, language_for_call
from bot.conversation.pipeline import CallPipeline, build_call_pipeline, pipeline_input_rate
from bot.providers import ProviderChoice, ProviderContext, SharedResources
from bot.state import StateStore
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
# A transfer closes the stream at the message's mark echo, or this long after its audio ended.
TRANSFER_ECHO_WAIT_SECS = 5.0
# Spoken length estimate of a collect_digits prompt (the first-digit timer starts after it).
SECS_PER_WORD = 0.4


@dataclass
class CallInfo(ExotelStart):
    """Who is calling (from Exotel's ``start``) and the rate the stream runs at."""

    sample_rate: int = 8000
    # The context webhook's ``language``, when it was fetched before the pipeline was built.
    context_language: str | None = None

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
        input_processors: list | None = None,
        hold_greeting: bool = False,
        agent_config: AgentConfig | None = None,
        store: StateStore | None = None,
        query: Mapping[str, str] | None = None,
    ) -> None:
        self.info = info
        # Outbound calls: the greeting waits until whoever built the call says ``greet()``
        # (the dialer's answer gate, after a "hello" or a short silence).
        self.hold_greeting = hold_greeting
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
        ctx = self._know_the_call(websocket, shared, agent_config, store, query)
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
            input_processors=input_processors,
            agent=self.agent,
            tools=self.agent.registrations(
                end_call=self._llm_end_call, transfer=self.transfer, say=self._say_prompt
            ),
            around_user=self.languages.around_user,
        )
        self.languages.bind(self.pipeline, self.holding, shared, self.faults)
        if self.faults:
            self.faults.watch(self.worker)
        self._wire_events()

    def _know_the_call(
        self,
        websocket: WebSocket,
        shared: SharedResources,
        agent_config: AgentConfig | None,
        store: StateStore | None,
        query: Mapping[str, str] | None,
    ) -> ProviderContext:
        """The call's language and agent (variables, tools, context), and what its providers
        are built with."""
        # The call's language (bot.conversation.language): providers, phrases, switches.
        self.languages = language_for_call(self.info, websocket, self.settings, shared)
        self.language = self.languages.state  # .phrases: greeting, goodbye... in its language
        # What the call knows and may do (bot.agent); the context answer is fetched now.
        self.agent = CallAgent.for_call(
            agent_config or AgentConfig(), self.info, store=store, query=query
        )
        self.agent.start_context()
        self._base_prompt = self.agent.system_prompt(self.settings.system_prompt())
        self.language.base_prompt = self._base_prompt  # what a switch adds its line to
        return ProviderContext(
            settings=self.settings,
            in_rate=self.info.in_rate,
            out_rate=self.info.sample_rate,
            shared=shared,
            end_call=self.end_call,
            system_prompt=self._base_prompt,
            captures=self.agent.captures,
            **self.languages.provider_fields,
        )

    @property
    def worker(self):
        return self.pipeline.worker

    def _wire_events(self) -> None:
        @self.transport.event_handler("on_client_connected")
        async def _greet(_transport, _ws) -> None:
            await self.agent.context_ready()  # bounded: the context timeout and a margin
            await self._apply_context()
            if not self.hold_greeting:
                await self.greet()

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
            # The pipeline's tasks inherit this: their log lines mask the keypad entries.
            with logger.contextualize(masked=self.agent.log_masks):
                await runner.run()
        finally:
            cap.cancel()
            if self._end_task and not self._end_task.done():
                self._end_task.cancel()
            await self.agent.close()
            if self.serializer.stop_reason and not self.end_reason:
                self._mark_end(f"caller hung up (stop: {self.serializer.stop_reason})", "caller")
            self._mark_end("pipeline finished", by="bot")
            logger.info(
                f"call ended after {time.monotonic() - self.started_at:.1f} s: "
                f"{self.end_reason} (by {self.hung_up_by})"
            )

    async def greet(self) -> None:
        """Speak the greeting (at once on connect, or when a held greeting is released)."""
        if not self._ending:
            await self._speak(self.agent.greeting(self.language.phrases.greeting))

    async def hang_up(self, reason: str) -> None:
        """End at once without a word: an answering machine or a carrier announcement."""
        if self._ending:
            return
        self._ending = True
        if self.faults:
            self.faults.stand_down()
        self._mark_end(reason, by="bot")
        logger.info(f"hanging up: {reason}")
        await self.worker.queue_frame(EndFrame())

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

    async def _llm_end_call(self, reason: str) -> None:
        """The LLM's end_call, run once its turn has been heard out (bot.agent.guard): the
        goodbye it said has been heard already; a turn without words gets ours."""
        self._begin_ending(reason, None, heard=self.agent.observer.response_spoke)

    def _begin_ending(self, reason: str, goodbye: str | None, heard: bool = False) -> None:
        if self._ending:
            return
        self._ending = True
        if self.faults:
            self.faults.stand_down()  # silence is expected from now on
        self._mark_end(reason, by="bot")
        logger.info(f"ending the call: {reason}")
        goodbye = self.agent.render(goodbye) if goodbye else goodbye
        self._end_task = asyncio.create_task(self._end(goodbye, heard), name="end-call")

    async def transfer(self, request: TransferRequest) -> None:
        """The LLM's transfer_call: message, its echo, the outcome recorded, the stream closed.

        Like end_call it runs in a task of the call's own; a store that cannot record the
        transfer leaves the call going on (Exotel would hang up on the caller otherwise).
        """
        if self._ending:
            return
        self._ending = True
        logger.info(f"transferring the call: {request.reason}")
        self._end_task = asyncio.create_task(self._transfer(request), name="transfer")

    async def _transfer(self, request: TransferRequest) -> None:
        done = await self.agent.transfer(
            request, speak=self._speak, heard=self._wait_for_echo, close=self._close_transferred
        )
        if not done:
            self._ending = False

    async def _close_transferred(self) -> None:
        if self.faults:
            self.faults.stand_down()
        self._mark_end("transferred to a human", by="bot")
        await self.worker.queue_frame(EndFrame())

    async def _end(self, goodbye: str | None, heard: bool = False) -> None:
        """Goodbye (if given, or if the bot said nothing after being asked to end) -> the
        utterance's mark -> Exotel's echo of it (bounded by the audio still queued plus a
        margin) -> EndFrame, which closes the socket so the Exotel flow moves on."""
        out = self.transport.output()
        asked_at = time.monotonic()
        if goodbye:
            await self._speak(goodbye)
        if heard:  # played out already; let what is still in flight finish
            heard = await self._wait_until_heard(0.0)
        else:
            heard = await self._wait_until_heard(asked_at)
        if not heard and not goodbye:
            # The bot was asked to end without a goodbye and said nothing: say ours.
            await self._speak(self.agent.render(self.language.phrases.goodbye))
            heard = await self._wait_until_heard(time.monotonic())
        if not heard:
            logger.warning("goodbye not confirmed by Exotel in time; closing anyway")
        logger.debug(f"closing with {out.playout_remaining_secs:.2f} s of audio unplayed")
        await self.worker.queue_frame(EndFrame())

    async def _speak(self, text: str) -> None:
        """Say ``text``: the pre-rendered audio if cached (instant), else through the TTS."""
        if text and not (self.holding and await self.holding.say(text)):
            await self.worker.queue_frame(TTSSpeakFrame(text))

    async def _apply_context(self) -> None:
        """The context answer's system prompt (rendered), sent to the LLM before any turn."""
        prompt = self.agent.system_prompt(self.settings.system_prompt())
        if prompt != self._base_prompt:
            self.language.base_prompt = prompt  # a later language switch keeps it
            delta = LLMSettings(system_instruction=self.language.system_prompt())
            await self.worker.queue_frame(
                LLMUpdateSettingsFrame(delta=delta, service=self.pipeline.llm)
            )

    async def _say_prompt(self, text: str) -> float:
        """collect_digits' prompt: queued now; returns its estimated spoken length."""
        await self._speak(text)
        return len(text.split()) * SECS_PER_WORD

    async def _wait_for_echo(self, since: float) -> bool:
        """True at the echo of what was said after ``since``; False when nothing was said,
        or TRANSFER_ECHO_WAIT_SECS after its audio ended without an echo."""
        out = self.transport.output()
        audio_end = 0.0
        while True:
            now = time.monotonic()
            if out.last_echo_at > since and not out.busy:
                return True
            if out.last_audio_at > since:
                audio_end = max(audio_end, now + out.playout_remaining_secs)
                if now > audio_end + TRANSFER_ECHO_WAIT_SECS:
                    return False
            elif now > since + GOODBYE_START_SECS + self.settings.provider_timeout_secs:
                return False  # nothing was said
            await asyncio.sleep(0.05)

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
