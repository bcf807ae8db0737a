"""Per-call pipeline plumbing that no whole-call test would notice going wrong."""

from __future__ import annotations

import asyncio
import ssl
from types import SimpleNamespace

import pytest
from pipecat.frames.frames import OutputAudioRawFrame, TextFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.config import Settings
from bot.conversation.pipeline import BotAudioEndsHere, PushesOnlyUnlessAsked
from bot.providers import REGISTRY, ProviderContext
from bot.providers.tls import shared_tls_context


class ReadsPushes(BaseObserver):
    async def on_push_frame(self, data: FramePushed) -> None:
        pass


class ReadsBoth(ReadsPushes):
    async def on_process_frame(self, data: FrameProcessed) -> None:
        pass


async def test_processed_frames_are_queued_only_for_observers_that_read_them():
    hub = WorkerObserver(observers=[ReadsPushes()])
    hub.__class__ = PushesOnlyUnlessAsked
    queued: list = []

    async def send_to_proxy(data) -> None:
        queued.append(data)

    hub._send_to_proxy = send_to_proxy
    data = FrameProcessed(
        processor=FrameProcessor(),
        frame=TextFrame("hi"),
        direction=FrameDirection.DOWNSTREAM,
        timestamp=0,
    )
    await hub.on_process_frame(data)
    assert queued == []  # the call's observer reads pushes only

    hub.add_observer(ReadsBoth())
    await hub.on_process_frame(data)
    assert queued == [data]


class WantsText(ReadsPushes):
    def wants(self, data: FramePushed) -> bool:
        return isinstance(data.frame, TextFrame)


async def test_pushes_are_queued_only_if_an_observer_wants_them():
    hub = WorkerObserver(observers=[WantsText()])
    hub.__class__ = PushesOnlyUnlessAsked
    queued: list = []

    class Queue:
        async def put(self, data) -> None:
            queued.append(data)

    hub._proxies = {hub._observers[0]: SimpleNamespace(queue=Queue(), observer=hub._observers[0])}
    source, dest = FrameProcessor(), FrameProcessor()
    text = FramePushed(source, dest, TextFrame("hi"), FrameDirection.DOWNSTREAM, 0)
    audio = FramePushed(
        source, dest, OutputAudioRawFrame(bytes(320), 8000, 1), FrameDirection.DOWNSTREAM, 0
    )
    await hub.on_push_frame(audio)
    await hub.on_push_frame(text)
    assert queued == [text]


async def test_bot_audio_stops_at_the_assistant_aggregator():
    """Chunks the output pushed on are not queued for the aggregator; its text frames are."""
    context = LLMContext()
    assistant = LLMContextAggregatorPair(context).assistant()
    assistant.__class__ = BotAudioEndsHere
    queued: list = []

    async def put(item) -> None:
        queued.append(item[0])

    assistant._FrameProcessor__input_queue.put = put
    chunk = OutputAudioRawFrame(bytes(3200), 8000, 1)
    text = TextFrame("hello")
    await assistant.queue_frame(chunk)
    await assistant.queue_frame(text)
    await assistant.queue_frame(chunk, FrameDirection.UPSTREAM)
    assert queued == [text, chunk]


def test_cloud_services_share_one_tls_context(monkeypatch):
    """Loading the CA bundle takes ~22 ms of the event loop; a call start must not do it."""
    settings = Settings(
        deepgram_api_key="k",
        openai_api_key="k",
        deepgram_base_url="ws://127.0.0.1:9",
        openai_base_url="http://127.0.0.1:9/v1",
    )
    ctx = ProviderContext(settings=settings, in_rate=8000, out_rate=8000)
    services = [REGISTRY[("stt", "deepgram")], REGISTRY[("llm", "openai")]]
    for provider in services:  # the first call may build the process's context
        provider.factory(ctx)
    built = []
    real = ssl.create_default_context
    monkeypatch.setattr(
        ssl, "create_default_context", lambda *a, **k: built.append(1) or real(*a, **k)
    )
    for _ in range(3):
        for provider in services:
            provider.factory(ctx)
    assert built == []


async def test_wss_connections_share_the_tls_context(monkeypatch):
    """Deepgram's and Cartesia's WebSockets build no TLS context of their own on wss URLs."""
    from deepgram.listen.v1 import raw_client

    async def hang_up(reader, writer) -> None:
        writer.close()  # no TLS here: each handshake fails once the connection is made

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    url = f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    settings = Settings(deepgram_api_key="k", cartesia_api_key="k", cartesia_url=url)
    ctx = ProviderContext(settings=settings, in_rate=8000, out_rate=8000)
    REGISTRY[("stt", "deepgram")].factory(ctx)  # wraps the SDK's connect
    cartesia = REGISTRY[("tts", "cartesia")].factory(ctx)
    shared_tls_context()  # the process's one context, built at the first call start
    built = []
    real = ssl.create_default_context
    monkeypatch.setattr(
        ssl, "create_default_context", lambda *a, **k: built.append(1) or real(*a, **k)
    )
    opens = [
        lambda: raw_client.websockets_client_connect(url, extra_headers={}),
        lambda: cartesia._websocket_connect(url),
    ]
    async with server:
        for open_socket in opens:
            with pytest.raises((OSError, ssl.SSLError, EOFError)):
                await asyncio.wait_for(open_socket(), 5)
    assert built == []
