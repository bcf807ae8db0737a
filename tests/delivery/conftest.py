"""A local webhook receiver on 127.0.0.1 and a clock the tests move by hand."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def spec_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The receiver's side, written from the spec: v1,base64(HMAC-SHA256(key, id.ts.body))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def spec_verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    expected = spec_signature(secret, headers["webhook-id"], headers["webhook-timestamp"], body)
    return any(
        hmac.compare_digest(expected, candidate)
        for candidate in headers["webhook-signature"].split(" ")
    )


class Clock:
    """time.time stand-in: starts at a real-looking time and moves only when told."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers with ``statuses`` in order (the last one repeats); records every request."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delay_secs: float = 0.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received({k.lower(): v for k, v in request.headers.items()}, body))
        self.arrived.set()
        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        return web.Response(status=status, headers=self.extra_headers)


async def serve(receiver: Receiver, port: int = 0) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{bound}/hooks?token=s3cret"
    return runner


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    runner = await serve(found)
    yield found
    await runner.cleanup()


@pytest.fixture
def clock() -> Clock:
    return Clock()
