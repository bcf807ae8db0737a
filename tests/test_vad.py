"""The shared-session Silero analyzer decides exactly like Pipecat's, per stream."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer

from bot.offline import get_offline_models, synthesize
from bot.vad import SharedSileroVADAnalyzer

pytestmark = pytest.mark.models  # Piper speaks the test audio


def speech_then_silence(text: str) -> bytes:
    pcm = synthesize(get_offline_models(), text, 8000)
    return bytes(8000) + pcm + bytes(16000)


async def states(analyzer, audio: bytes) -> list:
    analyzer.set_sample_rate(8000)
    out = []
    for i in range(0, len(audio), 1600):  # Exotel's 100 ms frames
        out.append(await analyzer.analyze_audio(audio[i : i + 1600]))
    return out


async def test_same_decisions_as_stock_and_streams_independent():
    first = speech_then_silence("What are your opening hours?")
    second = speech_then_silence("I would like a refund for my order, please.")
    expected = [await states(SileroVADAnalyzer(sample_rate=8000), a) for a in (first, second)]
    # Two calls on the shared session at once: each must see only its own stream's state.
    shared = await asyncio.gather(
        states(SharedSileroVADAnalyzer(sample_rate=8000), first),
        states(SharedSileroVADAnalyzer(sample_rate=8000), second),
    )
    assert shared == expected
    assert any(s.name == "SPEAKING" for s in shared[0])
    assert np.unique([s.name for s in shared[1]]).size > 1
