"""The per-call conversation: transport in -> STT -> user turn -> LLM -> TTS -> transport out.

This module knows the conversation and nothing of HTTP or Exotel's JSON. It is built fresh for
every call (Pipecat pipelines must not be reused across sessions, pipecat-notes §8.4) from
cheap factories; the heavy objects come in through ``ProviderContext.shared``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.audio.vad.vad_controller import VADController
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameCallback, FrameDirection, FrameProcessor
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import (
    TranscriptionUserTurnStartStrategy,
    VADUserTurnStartStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bot.agent import CancelSafeAssistantAggregator, ToolRegistration, register_tools
from bot.agent.session import CallAgent
from bot.config import Settings
from bot.conversation.turn_hybrid import notify_held_answers, with_turn_model
from bot.conversation.turns import (
    PatientSpeechTimeoutStopStrategy,
    SpeculativeSpeechTimeoutStopStrategy,
    guess_windows,
)
from bot.conversation.vad import SharedSileroVADAnalyzer, report_onsets
from bot.providers import ProviderChoice, ProviderContext, pipecat_fixes

pipecat_fixes.apply()

# While the caller speaks, Pipecat's VAD controller broadcasts a UserSpeakingFrame every 0.2 s
# both ways through the pipeline; nothing in a call reads it (the worker's idle cancel is
# off). A slower tick keeps it for anyone who adds a processor that does.
USER_SPEAKING_TICK_SECS = 1.0


class CallerAudioEndsHere(LLMUserAggregator):
    """Pipecat's user aggregator, except that the caller's audio goes no further.

    The aggregator runs the VAD on each ``InputAudioRawFrame`` and then forwards it. Nothing
    after it (LLM, TTS, holding phrases, output) uses caller audio, yet those ten frames a
    second through seven more processors were over a third of a call's frame hops.
    """

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        if direction == FrameDirection.DOWNSTREAM and isinstance(frame, InputAudioRawFrame):
            return
        await super().push_frame(frame, direction)


class BotAudioEndsHere(CancelSafeAssistantAggregator):
    """Pipecat's assistant aggregator, except that the bot's audio goes no further (and a tool
    call cancelled before it started is settled, bot.agent.guard).

    The output transport pushes every chunk it has written on downstream, where the call's
    records see it leave. The aggregator after it, last in the pipeline, reads text and turn
    frames only, yet each chunk took two of its loop steps and the pipeline sink's.
    """

    async def queue_frame(
        self,
        frame: Frame,
        direction: FrameDirection = FrameDirection.DOWNSTREAM,
        callback: FrameCallback | None = None,
    ) -> None:
        if (
            direction == FrameDirection.DOWNSTREAM
            and callback is None
            and isinstance(frame, OutputAudioRawFrame)
        ):
            return
        await super().queue_frame(frame, direction, callback)


class PushesOnlyUnlessAsked(WorkerObserver):
    """Pipecat's observer hub, except that frames go only to observers that read them.

    The hub queues every frame a processor processes, as well as every frame it pushes, to
    each observer's task. The call's observer (bot.observability.records) reads pushes only, so the
    processed half was a queue hop per frame per processor for nothing. A push is queued
    only if some observer wants it: one with a ``wants(data)`` method is asked, one without
    wants everything. The call's observer ignored most pushes (caller audio, bot audio
    before the output, speaking ticks); with it alone, those are no longer queued at all.
    """

    async def on_push_frame(self, data: FramePushed) -> None:
        for observer in self._observers:
            wants = getattr(observer, "wants", None)
            if wants is None or wants(data):
                await super().on_push_frame(data)
                return

    async def on_process_frame(self, data: FrameProcessed) -> None:
        # A plain loop: this runs for every frame every processor takes in.
        for observer in self._observers:
            if type(observer).on_process_frame is not BaseObserver.on_process_frame:
                await super().on_process_frame(data)
                return


class PausableOutput(Protocol):
    """The output transport's pause and resume (bot.telephony.transport.ExotelOutputTransport).

    Named by shape, not imported: the conversation sits below telephony.
    """

    async def pause(self) -> None: ...

    def resume(self) -> None: ...


def pause_at_onsets(controller: VADController, output: PausableOutput) -> None:
    """The bot's audio pauses at the caller's first voiced window and resumes if the VAD
    then hears no speech; a confirmed onset interrupts it as before (bot.telephony.transport)."""
    controller = report_onsets(controller)

    @controller.event_handler("on_speech_onset")
    async def _pause(_controller: VADController) -> None:
        await output.pause()

    @controller.event_handler("on_speech_onset_dismissed")
    async def _resume(_controller: VADController) -> None:
        output.resume()


def pipeline_input_rate(call_rate: int) -> int:
    """Silero VAD takes 8 or 16 kHz, so a 24 kHz call is heard at 16 kHz."""
    return 16000 if call_rate == 24000 else call_rate


@dataclass
class CallPipeline:
    """The pieces of one call's pipeline that the call controller talks to."""

    worker: PipelineWorker
    context: LLMContext
    aggregators: LLMContextAggregatorPair
    stt: FrameProcessor
    llm: FrameProcessor
    tts: FrameProcessor


def build_call_pipeline(
    transport: BaseTransport,
    choice: ProviderChoice,
    ctx: ProviderContext,
    *,
    extra_processors: list[FrameProcessor] | None = None,
    observers: list[BaseObserver] | None = None,
    vad_analyzer=None,
    input_processors: list[FrameProcessor] | None = None,
    agent: CallAgent | None = None,
    tools: list[ToolRegistration] | None = None,
    around_user: tuple[list[FrameProcessor], list[FrameProcessor]] = ([], []),
) -> CallPipeline:
    """Assemble one call's pipeline.

    ``extra_processors`` go between the TTS and the output (e.g. the holding-phrase
    processor), so what they push is bot audio like any other. ``input_processors`` go between
    the STT and the user aggregator: they see the caller's transcripts first and may hold them
    back (the outbound answer gate, bot.dialer.outbound). ``vad_analyzer`` lets tests
    use a deterministic VAD; the default is Silero from Pipecat's bundled ONNX model, on one
    session shared by every call (bot/vad.py). ``agent`` offers its tools to an LLM that
    can call them (``tools``: the handlers, registered on the LLM service) and watches the
    call's frames (the turn guard and the keypad). ``around_user``: processors just before and
    just after the user aggregator (an ``auto`` call's language tap and switcher,
    bot.conversation.language); a call in a fixed language has none.
    """
    stt = choice.stt.factory(ctx)
    llm = choice.llm.factory(ctx)
    tts = choice.tts.factory(ctx)

    schema = agent.tools_schema() if agent is not None and choice.llm.tools else None
    context = LLMContext(tools=schema) if schema and schema.standard_tools else LLMContext()
    if schema is not None and tools:
        register_tools(llm, tools)
    if agent is not None:
        observers = [*(observers or []), agent.observer]
    aggregators = _aggregators(
        context,
        ctx,
        transport,
        vad_analyzer,
        streaming_stt=not isinstance(stt, SegmentedSTTService),
    )
    # With TURN_MODEL on, the turn model may be asked once the early answer is held.
    notify_held_answers(llm, aggregators.user()._params.user_turn_strategies)
    processors = [
        transport.input(),
        stt,  # before the aggregator: it consumes transcripts (offline-models §7.4)
        *(input_processors or []),
        *around_user[0],
        aggregators.user(),
        *around_user[1],
        llm,
        tts,
        *(extra_processors or []),
        transport.output(),
        aggregators.assistant(),
    ]
    worker = _pipeline_worker(processors, ctx, observers)
    worker._observer.__class__ = PushesOnlyUnlessAsked  # adds no state, like the swap above
    return CallPipeline(worker, context, aggregators, stt, llm, tts)


def _aggregators(
    context: LLMContext,
    ctx: ProviderContext,
    transport: BaseTransport,
    vad_analyzer,
    *,
    streaming_stt: bool,
) -> LLMContextAggregatorPair:
    """The user aggregator (VAD, turn strategies, idle timer) and the assistant's, ours."""
    s = ctx.settings
    speculative = s.turn_speculative and not ctx.auto
    # An analyzer given by the caller (tests, the Exotel demo) keeps its own stop window.
    windows = guess_windows(
        s, speculative=speculative, streaming_stt=streaming_stt and vad_analyzer is None
    )
    vad = vad_analyzer or SharedSileroVADAnalyzer(
        sample_rate=ctx.in_rate,
        params=VADParams(
            confidence=s.vad_confidence,
            start_secs=s.vad_start_secs,
            stop_secs=windows.vad_stop_secs,
        ),
    )
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad,
            # Armed when the bot stops speaking; the call controller prompts, then hangs up.
            user_idle_timeout=s.idle_prompt_secs,
            user_turn_strategies=with_turn_model(
                user_turn_strategies(
                    s, ctx.language, speculative=speculative, extra_wait=windows.extra_wait
                ),
                s,
            ),
        ),
    )
    # The pair builds its own user aggregator and wires the assistant half to it; changing
    # the class (it adds no state) keeps that wiring.
    aggregators.user().__class__ = CallerAudioEndsHere
    aggregators.assistant().__class__ = BotAudioEndsHere
    if aggregators.user()._vad_controller is not None:
        aggregators.user()._vad_controller._speech_activity_period = USER_SPEAKING_TICK_SECS
        if s.barge_in_pause:
            pause_at_onsets(aggregators.user()._vad_controller, transport.output())
    return aggregators


def user_turn_strategies(
    s: Settings,
    language: str | None = None,
    *,
    speculative: bool | None = None,
    extra_wait: float = 0.0,
) -> UserTurnStrategies:
    """When a caller's turn starts (VAD or a transcript) and ends (a speech timeout).

    ``language``: the call's (a full tag), whose words tell an unfinished sentence; None:
    today's ``BOT_LANGUAGE``. The LLM is asked early (speculation) only for a call in a
    fixed language: an ``auto`` call decides its language when the turn is committed, so
    the reply to a switching turn is asked for in the new language. ``extra_wait``: what
    the VAD's early stop took off its window (bot.conversation.turns.guess_windows), added
    to every wait so the turn ends when it would have.
    """
    language = language or ("en-IN" if s.bot_language.lower().startswith("en") else "")
    speculative = s.turn_speculative if speculative is None else speculative
    # Model-free turn end: smart-turn often waits its 3 s fallback on phone audio
    # (offline-models §7.4); a short speech timeout answers in ~0.5 s.
    return UserTurnStrategies(
        start=[VADUserTurnStartStrategy(), TranscriptionUserTurnStartStrategy()],
        stop=[
            (
                SpeculativeSpeechTimeoutStopStrategy
                if speculative
                else PatientSpeechTimeoutStopStrategy
            )(
                user_speech_timeout=s.turn_speech_timeout_secs + extra_wait,
                # Read per language (bot.languages.turns); off where a language has no list.
                unfinished_timeout=s.turn_unfinished_timeout_secs + extra_wait,
                language=language,
                extra_wait=extra_wait,
            )
        ],
    )


def _pipeline_worker(
    processors: list[FrameProcessor], ctx: ProviderContext, observers: list[BaseObserver] | None
) -> PipelineWorker:
    """The worker that runs the call's pipeline, with metrics on and Pipecat's extras off."""
    return PipelineWorker(
        Pipeline(processors),
        params=PipelineParams(
            audio_in_sample_rate=ctx.in_rate,
            audio_out_sample_rate=ctx.out_rate,
            # TTFB per provider feeds the records and /metrics; usage (tokens, characters)
            # is read by nothing here, and every MetricsFrame travels the whole pipeline.
            enable_metrics=True,
            enable_usage_metrics=False,
        ),
        enable_rtvi=False,
        # The call's observer (bot.observability.records) tracks turns; Pipecat's own turn
        # tracker would be a second observer queue fed every frame push of the call.
        enable_turn_tracking=False,
        # The call controller owns idle handling (prompt, then goodbye); Pipecat's 5-minute
        # idle cancel would cut a silent caller without a word.
        idle_timeout_secs=None,
        observers=observers or [],
    )
