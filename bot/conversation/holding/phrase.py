"""What a holding phrase is: the voice it was rendered with and its audio, cut for the wire.

Shared by the renderer, the cache and the processor; the processor needs nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from serializers.exotel import chunk_rule, compliant_chunks

DEFAULT_HOLDING_PHRASES: tuple[str, ...] = (
    "One moment, please.",
    "Let me check that for you.",
    "Just a second.",
    "Thanks for waiting, almost there.",
)
# Bump when the rendering pipeline changes in a way that makes old files wrong.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class VoiceId:
    """Everything besides the text and the rate that changes how a phrase sounds."""

    provider: str
    voice: str = ""
    model: str = ""
    language: str = ""

    def key(self, text: str, sample_rate: int) -> str:
        """Stable file key: the same voice, text and rate always map to the same file."""
        ident = [CACHE_FORMAT, self.provider, self.voice, self.model, self.language, text]
        ident.append(sample_rate)
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]

    def describe(self) -> str:
        return "/".join(part for part in (self.provider, self.voice, self.model) if part)


@dataclass(frozen=True)
class RenderedPhrase:
    """One phrase at one rate, cut into chunks the output transport sends unchanged."""

    text: str
    sample_rate: int
    chunks: tuple[bytes, ...]
    voice: VoiceId

    @classmethod
    def from_pcm(cls, text: str, pcm: bytes, sample_rate: int, voice: VoiceId) -> RenderedPhrase:
        """Cut 16-bit mono PCM at the call rate into minimum-size compliant chunks.

        One chunk per frame of exactly the transport's chunk size means the output's
        MediaSender re-cuts nothing, and the zero-padded tail means its flush adds nothing.
        """
        rule = chunk_rule(sample_rate)
        chunks = tuple(compliant_chunks(pcm, rule, rule.min_bytes)) if pcm else ()
        return cls(text, sample_rate, chunks, voice)

    @property
    def duration_secs(self) -> float:
        return sum(len(c) for c in self.chunks) / (2 * self.sample_rate)


def unique_texts(texts: Iterable[str]) -> list[str]:
    """Stripped, non-empty, first occurrence kept: the phrase lists as the cache keys them."""
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
