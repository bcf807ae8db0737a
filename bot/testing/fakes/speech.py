"""Deterministic "speech": the audio the fakes send and the callers of the tests say.

One word is a buzz of a word-specific pitch in a fixed slot, so durations are exact, runs
reproduce, and an energy VAD hears it as voice.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np

VOICED_FRACTION = 0.8  # the rest of each word's slot is silence, like a gap between words
_AMPLITUDE = 9000.0


@functools.lru_cache(maxsize=4096)
def _word_pcm(word: str, sample_rate: int, n_samples: int) -> bytes:
    """One word of buzz: harmonics of a word-specific pitch under a smooth envelope.

    Deterministic (pitch from the word's CRC) so runs reproduce, voice-like enough for an
    energy VAD, and cached because benchmarks say the same sentences thousands of times.
    """
    voiced = max(1, int(n_samples * VOICED_FRACTION))
    f0 = 100.0 + zlib.crc32(word.encode()) % 80
    t = np.arange(voiced) / sample_rate
    wave = np.zeros(voiced)
    for k in range(1, 6):
        if f0 * k < sample_rate / 2:
            wave += np.sin(2 * np.pi * f0 * k * t) / k
    envelope = np.sqrt(np.sin(np.pi * (np.arange(voiced) + 0.5) / voiced))
    wave *= envelope * (_AMPLITUDE / max(1e-9, float(np.abs(wave).max())))
    pcm = np.zeros(n_samples, dtype=np.int16)
    pcm[:voiced] = wave.astype(np.int16)
    return pcm.tobytes()


@dataclass(frozen=True)
class SynthesizedSpeech:
    """PCM (s16le mono) for a transcript plus where each word sits in it."""

    pcm: bytes
    words: list[str]
    word_bytes: int
    """Bytes per word slot; every word gets the same slot so durations are exact."""
    seconds_per_word: float


def synthesize_speech(text: str, sample_rate: int, seconds_per_word: float) -> SynthesizedSpeech:
    """Deterministic audio whose duration is exactly ``len(words) * slot``."""
    words = text.split()
    n_samples = max(1, round(seconds_per_word * sample_rate))
    pcm = b"".join(_word_pcm(word, sample_rate, n_samples) for word in words)
    return SynthesizedSpeech(pcm, words, n_samples * 2, n_samples / sample_rate)
