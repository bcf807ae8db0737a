"""The real server on the fakes with the delivery room wired: webhooks, analysis, calls page."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from bot.providers import SharedResources, choose_providers
from bot.server.app import create_app
from bot.server.runtime import Runtime
from bot.state import StateStore
from bot.testing.fakes import FakeProviders
from bot.testing.localserver import serving
from tests.conftest import energy_vad_factory
from tests.delivery.conftest import SECRET
from tests.helpers import cloud_settings

ADMIN = ("ops", "pw-Admin-42")
EXTRACT = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^[A-Z][0-9]{3}$"},
        "satisfied": {"type": "boolean"},
    },
}
ANALYSIS_ANSWER = {
    "summary": "The caller asked about order A123 and hung up.",
    "extraction": {"order_id": "A123", "satisfied": "very", "extra": 1},
}


def analysis_responder(replies: list[str]) -> Callable[[list[dict], Any], str]:
    """The call's replies in order; the after-call analysis request gets ANALYSIS_ANSWER."""
    queue = list(replies)

    def respond(messages: list[dict[str, Any]], _tools: Any) -> str:
        system = str(messages[0].get("content", "")) if messages else ""
        if "transcript of a finished phone call" in system:
            return json.dumps(ANALYSIS_ANSWER)
        return queue.pop(0) if queue else "Okay."

    return respond


@dataclass
class Bot:
    base: str
    runtime: Runtime

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/exotel/ws?sample-rate=8000"

    def client(self, auth: tuple[str, str] | None = ADMIN) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, auth=auth, timeout=10)


@asynccontextmanager
async def wired_bot(
    fakes: FakeProviders, store: StateStore, *, analysis: dict | None = None, **overrides: Any
) -> AsyncIterator[Bot]:
    """The server with a store and the after-call work started (as Runtime.start does)."""
    values = {
        "webhook_secret": SECRET,
        "webhook_first_retry_secs": 0.05,
        "admin_basic_auth": f"{ADMIN[0]}:{ADMIN[1]}",
        **overrides,
    }
    settings = cloud_settings(fakes, **values)
    if analysis is not None:
        settings._room_tables = {"analysis": analysis}
    runtime = Runtime(
        settings=settings,
        choice=choose_providers(settings),
        shared=SharedResources(),
        vad_factory=energy_vad_factory,
    )
    async with serving(create_app(settings, runtime=runtime)) as base:
        runtime.open_delivery(store)  # the lifespan's shutdown stops it (runtime.stop)
        yield Bot(base, runtime)


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
