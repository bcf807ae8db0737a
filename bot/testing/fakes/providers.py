"""All three fakes together, with the environment that points the bot at them."""

from __future__ import annotations

import asyncio
from typing import Self

from bot.testing.fakes.cartesia import DEFAULT_CARTESIA_KEY, FakeCartesia
from bot.testing.fakes.deepgram import DEFAULT_DEEPGRAM_KEY, FakeDeepgram
from bot.testing.fakes.openai import DEFAULT_OPENAI_KEY, FakeOpenAI


class FakeProviders:
    """All three fakes together, with the environment that points the bot at them."""

    def __init__(
        self,
        *,
        deepgram: FakeDeepgram | None = None,
        openai: FakeOpenAI | None = None,
        cartesia: FakeCartesia | None = None,
        port_base: int = 0,
    ) -> None:
        """Use the given fakes or defaults; ``port_base`` P puts defaults on P, P+1, P+2."""

        def port(offset: int) -> int:
            return port_base + offset if port_base else 0

        self.deepgram = deepgram or FakeDeepgram(port=port(0))
        self.openai = openai or FakeOpenAI(port=port(1))
        self.cartesia = cartesia or FakeCartesia(port=port(2))

    @property
    def fakes(self) -> tuple[FakeDeepgram, FakeOpenAI, FakeCartesia]:
        return self.deepgram, self.openai, self.cartesia

    async def start(self) -> Self:
        """Start all three; if one fails to bind, the others are stopped again."""
        results = await asyncio.gather(*(f.start() for f in self.fakes), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]
        return self

    async def stop(self) -> None:
        await asyncio.gather(*(f.stop() for f in self.fakes))

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def env(self) -> dict[str, str]:
        """Environment variables that point the bot at these fakes."""
        return {
            "DEEPGRAM_BASE_URL": self.deepgram.base_url,
            "DEEPGRAM_API_KEY": self.deepgram.api_key or DEFAULT_DEEPGRAM_KEY,
            "OPENAI_BASE_URL": self.openai.base_url,
            "OPENAI_API_KEY": self.openai.api_key or DEFAULT_OPENAI_KEY,
            "CARTESIA_URL": self.cartesia.url,
            "CARTESIA_API_KEY": self.cartesia.api_key or DEFAULT_CARTESIA_KEY,
        }
