"""Run the real bot server in this process on a loopback port (tests, demo, benchmarks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext

import uvicorn
from fastapi import FastAPI

STARTUP_TIMEOUT_SECS = 60.0


class QuietServer(uvicorn.Server):
    """uvicorn without its SIGINT/SIGTERM capture: it lives inside someone else's process
    (a test run, a benchmark, the demo), whose signal handling must stay its own."""

    def capture_signals(self) -> nullcontext[None]:  # type: ignore[override]
        return nullcontext()


@asynccontextmanager
async def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn until the block exits; yields ``http://host:port``."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_SECS):
            while not server.started:
                if task.done():
                    task.result()  # surfaces the start-up error
                    raise RuntimeError("the server stopped during start-up")
                await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        await task
