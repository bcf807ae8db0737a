"""A local aiohttp server on 127.0.0.1 standing in for a business's tool and context URLs."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Seen:
    """One request the server got."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class LocalServer:
    base: str
    seen: list[Seen] = field(default_factory=list)


async def _app(seen: list[Seen]) -> web.Application:
    async def record(request: web.Request) -> Seen:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode()
        item = Seen(request.method, request.path, dict(request.query), dict(request.headers), body)
        seen.append(item)
        return item

    async def echo(request: web.Request) -> web.Response:
        item = await record(request)
        return web.json_response({"path": item.path, "query": item.query, "body": item.body})

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(2.0)
        return web.json_response({"late": True})

    async def fail(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"detail": "down"}, status=503)

    async def big(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="x" * 40_000)

    async def text(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="Order 42 ships tomorrow.")

    async def notjson(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="<html>oops</html>", content_type="application/json")

    async def context(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response(
            {"variables": {"customer_name": "Asha", "tier": 2}, "greeting": "Hi {{customer_name}}"}
        )

    async def hindi_context(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"language": "hi-IN", "variables": {"customer_name": "Asha"}})

    async def badcontext(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"variables": ["not", "a", "table"]})

    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/fail", fail)
    app.router.add_route("*", "/big", big)
    app.router.add_route("*", "/text", text)
    app.router.add_route("*", "/notjson", notjson)
    app.router.add_post("/context", context)
    app.router.add_post("/badcontext", badcontext)
    app.router.add_post("/hindi-context", hindi_context)
    return app


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    seen: list[Seen] = []
    runner = web.AppRunner(await _app(seen), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield LocalServer(f"http://127.0.0.1:{port}", seen)
    finally:
        await runner.cleanup()


@pytest.fixture
def refused_url() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing"
