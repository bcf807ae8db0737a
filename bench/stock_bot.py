"""The stock-Pipecat reference bot: Pipecat's own Exotel example, defaults and all, on the fakes.

Why this exists: every benchmark figure for our bot needs an anchor measured in the same run,
on the same machine, fakes and load. This is that anchor, kept as close as possible to
``pipecat-examples/exotel-chatbot/inbound/bot.py`` (Pipecat 1.14 API):

* ``parse_telephony_websocket`` reads Exotel's ``connected``/``start``;
* Pipecat's built-in ``ExotelFrameSerializer`` with default parameters;
* ``FastAPIWebsocketTransport`` with default parameters except audio in/out, no WAV header
  and the serializer (so 640-byte, 40 ms media messages at 8 kHz);
* ``PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000, metrics on)``;
* a ``SileroVADAnalyzer(stop_secs=0.2)`` and a smart-turn v3 analyzer built per call on the
  user aggregator (the default turn strategies), the greeting as an LLM run;
* Deepgram, OpenAI and Cartesia services pointed at the fakes through the same environment
  variables our bot reads (``DEEPGRAM_BASE_URL``, ``OPENAI_BASE_URL``, ``CARTESIA_URL`` and
  the three ``*_API_KEY``).

``--tuned`` is "Pipecat tuned by config only": the same code with 200 ms chunks
(``audio_out_10ms_chunks=20``), 8 kHz set on the transport both ways, and the model-free
speech-timeout turn strategy instead of smart-turn. Nothing else changes.

Usage: ``.venv/bin/python bench/stock_bot.py --port 8090 [--tuned]``; the WebSocket is
``/ws`` and ``GET /healthz`` answers once the app is up. Logging is WARNING by default so
neither bot pays for log formatting the other does not (``--log-level DEBUG`` for Pipecat's
own chatter, as the example prints it).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.exotel import ExotelFrameSerializer
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.turns.user_stop import (
    SpeechTimeoutUserTurnStopStrategy,
    TurnAnalyzerUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

WS_PATH = "/ws"
RATE = 8000
VOICE_ID = "71a7ad14-091c-4e8e-a314-022ece01c121"  # the example's "British Reading Lady"
SYSTEM_PROMPT = (
    "You are a helpful LLM in an audio call. Your goal is to demonstrate your capabilities in "
    "a succinct way. Your output will be converted to audio so don't include special "
    "characters in your answers. Respond to what the user said in a creative and helpful way."
)


@dataclass(frozen=True)
class StockConfig:
    """What differs between the stock and the tuned reference, plus where the fakes are."""

    tuned: bool
    speech_timeout_secs: float
    deepgram_url: str
    deepgram_key: str
    openai_url: str
    openai_key: str
    cartesia_url: str
    cartesia_key: str

    @classmethod
    def from_env(cls, tuned: bool, speech_timeout_secs: float) -> StockConfig:
        """The same variables ``python -m bot serve`` reads, so one environment drives both."""
        env = os.environ
        return cls(
            tuned=tuned,
            speech_timeout_secs=speech_timeout_secs,
            deepgram_url=env.get("DEEPGRAM_BASE_URL", ""),
            deepgram_key=env.get("DEEPGRAM_API_KEY", ""),
            openai_url=env.get("OPENAI_BASE_URL", ""),
            openai_key=env.get("OPENAI_API_KEY", ""),
            cartesia_url=env.get("CARTESIA_URL", "wss://api.cartesia.ai/tts/websocket"),
            cartesia_key=env.get("CARTESIA_API_KEY", ""),
        )


def transport_params(
    config: StockConfig, serializer: ExotelFrameSerializer
) -> FastAPIWebsocketParams:
    """The example's transport parameters; ``--tuned`` adds only the three config knobs."""
    tuned = (
        dict(
            audio_in_sample_rate=RATE,
            audio_out_sample_rate=RATE,
            audio_out_10ms_chunks=20,  # 20 x 160 B = 3200 B (200 ms), Exotel's minimum
        )
        if config.tuned
        else {}
    )
    return FastAPIWebsocketParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        add_wav_header=False,
        serializer=serializer,
        **tuned,
    )


def turn_strategies(config: StockConfig) -> UserTurnStrategies:
    """Smart-turn v3 per call (the example), or the speech timeout (tuned)."""
    if config.tuned:
        stop = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=config.speech_timeout_secs)
    else:
        stop = TurnAnalyzerUserTurnStopStrategy(turn_analyzer=LocalSmartTurnAnalyzerV3())
    return UserTurnStrategies(stop=[stop])


def build_worker(
    transport: FastAPIWebsocketTransport, config: StockConfig
) -> tuple[PipelineWorker, list[dict]]:
    """The example's pipeline, services pointed at the fakes. Returns (worker, messages)."""
    stt = DeepgramSTTService(api_key=config.deepgram_key, base_url=config.deepgram_url)
    llm = OpenAILLMService(api_key=config.openai_key, base_url=config.openai_url or None)
    tts = CartesiaTTSService(
        api_key=config.cartesia_key,
        url=config.cartesia_url,
        settings=CartesiaTTSService.Settings(voice=VOICE_ID),
    )
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    context = LLMContext(messages)
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=turn_strategies(config),
            vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=0.2)),
        ),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            user_aggregator,
            llm,
            tts,
            transport.output(),
            assistant_aggregator,
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=RATE,
            audio_out_sample_rate=RATE,
            enable_metrics=True,
            enable_usage_metrics=True,
        ),
    )
    return worker, messages


async def run_call(websocket: WebSocket, config: StockConfig) -> None:
    """One call, exactly as the example's ``bot()`` + ``run_bot()`` run it."""
    _, call_data = await parse_telephony_websocket(websocket)
    serializer = ExotelFrameSerializer(
        stream_sid=call_data["stream_id"], call_sid=call_data["call_id"]
    )
    transport = FastAPIWebsocketTransport(websocket, transport_params(config, serializer))
    worker, messages = build_worker(transport, config)

    @transport.event_handler("on_client_connected")
    async def on_client_connected(_transport, _client) -> None:
        messages.append({"role": "system", "content": "Please introduce yourself to the user."})
        await worker.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport, _client) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def create_app(config: StockConfig) -> FastAPI:
    """``/ws`` for calls (the Pipecat dev runner's path) and ``/healthz`` for the bench."""
    app = FastAPI(title="stock Pipecat Exotel bot")

    @app.websocket(WS_PATH)
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await run_call(websocket, config)
        except Exception:
            logger.exception("call failed")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "variant": "tuned" if config.tuned else "stock"}

    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--tuned", action="store_true", help="Pipecat tuned by config only")
    parser.add_argument(
        "--speech-timeout",
        type=float,
        default=0.3,
        help="tuned only: user_speech_timeout (default 0.3, our bot's default)",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    config = StockConfig.from_env(args.tuned, args.speech_timeout)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
