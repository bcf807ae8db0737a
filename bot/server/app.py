"""The bot's ASGI app and the uvicorn server that drains calls on SIGTERM.

The routes live beside it: ``bot.server.exotel_routes`` (what Exotel calls) and
``bot.server.ops_routes`` (health and metrics). Calls are run by ``bot.server.runtime``.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from loguru import logger

from bot.config import Settings, load_settings
from bot.server import agent_routes, calls_routes, dialer_routes, exotel_routes, ops_routes
from bot.server.runtime import Runtime


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    runtime_options: dict[str, Any] | None = None,
) -> FastAPI:
    """The bot's ASGI app. ``runtime`` lets tests inject one (its owner stops it); otherwise
    one starts at lifespan, with ``runtime_options`` (Runtime's test hooks), and stops after."""
    state: dict[str, Any] = {"runtime": runtime}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        owned = state["runtime"] is None
        if owned:
            state["runtime"] = await Runtime.start(
                settings or load_settings(), **(runtime_options or {})
            )
        try:
            yield
        finally:
            if owned:
                await state["runtime"].stop()
            logger.info("server stopped")

    app = FastAPI(
        title="Exotel voice bot",
        description="Answers Exotel Voicebot streams with a Pipecat pipeline per call.",
        lifespan=lifespan,
    )
    app.include_router(exotel_routes.router)
    app.include_router(ops_routes.router)
    app.include_router(dialer_routes.router)
    app.include_router(calls_routes.router)
    app.include_router(agent_routes.router)
    # The routes find the runtime here (bot.server.runtime.runtime_of): it exists only once
    # the lifespan has started it.
    app.state.runtime = lambda: state["runtime"]
    return app


class DrainingServer(uvicorn.Server):
    """uvicorn that drains live calls on SIGTERM (how a PaaS or Kubernetes stops an instance).

    /ready answers 503 at once and new upgrades get HTTP 503 while live calls finish, for up
    to SHUTDOWN_DRAIN_SECS; the rest then hear the goodbye. A second SIGTERM does not cut the
    drain short (an orchestrator may repeat it; only SIGKILL at the end of its grace period
    stops a drain); SIGINT (Ctrl-C) exits at once, as uvicorn does.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_secs: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_secs = drain_secs
        self._drain_task: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        runtime = self._app.state.runtime()
        if sig != signal.SIGTERM or runtime is None:
            super().handle_exit(sig, frame)
            return
        if self._drain_task is not None:
            logger.info(f"SIGTERM again: still draining {runtime.active_calls} live calls")
            return
        logger.info("SIGTERM: draining before exit")
        self._drain_task = asyncio.get_event_loop().create_task(self._drain(runtime))

    async def _drain(self, runtime: Runtime) -> None:
        try:
            await runtime.drain(self._drain_secs)
        finally:
            self.should_exit = True


def run_server(settings: Settings, host: str, port: int, **runtime_options: Any) -> None:
    """Serve until SIGINT, or SIGTERM after draining (``python -m bot serve``).

    ``runtime_options`` are Runtime's test hooks (e.g. ``vad_factory``) for test launchers.
    """
    app = create_app(settings, runtime_options=runtime_options)
    app.state.bind_host = host  # the calls page is open without ADMIN_BASIC_AUTH on loopback only
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        # uvloop (a dependency) where it installs, asyncio's own loop elsewhere.
        loop="auto",
        # A PaaS router terminates TLS and forwards; trust its X-Forwarded-* headers.
        proxy_headers=True,
        forwarded_allow_ips="*",
    )
    DrainingServer(config, app, settings.shutdown_drain_secs).run()
