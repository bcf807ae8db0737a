"""Shared pieces of the dialer tests: a fake clock and a status-callback receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from aiohttp import web

from bot.dialer.rules import IST
from bot.dialer.status import handle_status_callback, shared_callback_token
from bot.state.memory import MemoryStore

MORNING = datetime(2026, 1, 15, 10, 0, tzinfo=IST).timestamp()


class FakeClock:
    """Time moves only when someone sleeps on it: a sleep advances it at once."""

    def __init__(self, start: float = MORNING) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, secs: float) -> None:
        secs = max(0.0, secs)
        self.slept.append(secs)
        self.t += secs
        await asyncio.sleep(0)


class StatusReceiver:
    """``POST /exotel/status/{token}``: what the server will do, on a loopback port."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.answers: list[int] = []
        self.token = ""
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> StatusReceiver:
        self.token = await shared_callback_token(self.store)
        app = web.Application()
        app.router.add_post("/exotel/status/{token}", self._handle)
        app.router.add_post("/exotel/status", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/exotel/status/{self.token}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        status, _ = await handle_status_callback(
            self.store,
            expected_token=self.token,
            presented_token=request.match_info.get("token"),
            body=await request.read(),
            content_type=request.content_type,
            query=dict(request.query),
        )
        self.answers.append(status)
        return web.Response(status=status)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def receiver(store: MemoryStore) -> AsyncIterator[StatusReceiver]:
    rec = await StatusReceiver(store).start()
    yield rec
    await rec.stop()
