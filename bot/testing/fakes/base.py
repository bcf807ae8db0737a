"""Shared plumbing of the fakes: lifecycle on 127.0.0.1, API-key checks, fault injection, TLS.

Every fake binds 127.0.0.1 only (port 0 picks a free port), checks the API key the way its
provider does, and can have faults armed at runtime through one :class:`FaultSwitch`.
"""

from __future__ import annotations

import inspect
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, Self, TypeVar, get_args
from urllib.parse import parse_qsl, urlsplit

from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

LOCALHOST = "127.0.0.1"
"""The only address the fakes bind: they must never be reachable from outside the machine."""


FaultMode = Literal["refuse", "error_midstream", "hang"]
FAULT_MODES: tuple[str, ...] = get_args(FaultMode)

_T = TypeVar("_T")


class FaultSwitch:
    """Runtime-settable fault injection shared by the three fakes.

    A fault *fires* at its trigger point: ``refuse`` at a handshake or request, ``hang`` when a
    connection or request starts, ``error_midstream`` once ``after`` units (messages, deltas,
    chunks: see each fake) have passed. ``times`` bounds how often it fires before it clears
    itself, so a test can check that the bot recovers after "fail once, then work".
    """

    def __init__(self) -> None:
        self.mode: FaultMode | None = None
        self.after: int = 2
        self.remaining: int | None = None
        self.fired: int = 0

    def set(self, mode: FaultMode | None, *, after: int = 2, times: int | None = None) -> None:
        """Arm ``mode`` (``None`` clears); ``times=None`` keeps it armed until cleared."""
        if mode is not None and mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {FAULT_MODES}")
        if after < 0 or (times is not None and times < 1):
            raise ValueError("after must be >= 0 and times >= 1")
        self.mode, self.after, self.remaining = mode, after, times

    def armed(self, mode: FaultMode) -> bool:
        """Whether ``mode`` is set, without consuming a firing."""
        return self.mode == mode

    def fire(self, mode: FaultMode) -> bool:
        """Consume one firing of ``mode``; True means "inject the fault now"."""
        if self.mode != mode:
            return False
        self.fired += 1
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode = None
        logger.debug(f"fake: injecting fault {mode!r} (fired {self.fired}x)")
        return True


async def maybe_await(value: _T | Awaitable[_T]) -> _T:
    """Let user callables (transcriber, responder) be plain functions or coroutines."""
    if inspect.isawaitable(value):
        return await value
    return value


def split_target(target: str) -> tuple[str, dict[str, str]]:
    """Split a request target into path and query (last value wins for repeated keys)."""
    parts = urlsplit(target)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


@dataclass(frozen=True)
class ServerTLS:
    """A certificate and its key (PEM files): the fakes then speak TLS like the real APIs,
    so a benchmark can measure what TLS costs the bot (trust the cert via SSL_CERT_FILE)."""

    certfile: str
    keyfile: str

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


def url_scheme(plain: str, tls: ServerTLS | None) -> str:
    """``ws``/``http`` as given, or ``wss``/``https`` when the fake serves TLS."""
    return plain + "s" if tls else plain


class FakeServer:
    """Lifecycle shared by the fakes: start on 127.0.0.1, stop, async context manager."""

    def __init__(self, *, api_key: str | None, port: int) -> None:
        self.api_key = api_key
        self._requested_port = port
        self._port: int | None = None
        self.tls: ServerTLS | None = None
        """Serve ``wss``/``https`` with this certificate (set before ``start()``)."""
        self._faults = FaultSwitch()
        self.rejected: int = 0
        """Handshakes/requests turned away for a missing or wrong API key."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind 127.0.0.1 (port 0 = any free port) and serve in the running event loop."""
        if self._port is None:
            self._port = await self._serve(self._requested_port)
            logger.debug(f"{type(self).__name__} listening on {LOCALHOST}:{self._port}")
        return self

    async def stop(self) -> None:
        """Stop serving and drop open connections; safe to call twice."""
        if self._port is not None:
            await self._shutdown()
            self._port = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port; only valid after ``start()``."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    async def _serve(self, port: int) -> int:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        raise NotImplementedError

    # -- faults and auth ---------------------------------------------------------------------

    @property
    def fault(self) -> FaultMode | None:
        """The armed fault mode; assign to arm (always, until cleared) or ``None`` to clear."""
        return self._faults.mode

    @fault.setter
    def fault(self, mode: FaultMode | None) -> None:
        self._faults.set(mode, after=self._faults.after)

    def set_fault(
        self, mode: FaultMode | None, *, after: int = 2, times: int | None = None
    ) -> None:
        """Arm a fault: ``after`` units pass before ``error_midstream``; ``times`` firings max."""
        self._faults.set(mode, after=after, times=times)

    @property
    def faults_fired(self) -> int:
        """How many times an injected fault actually fired."""
        return self._faults.fired

    def _key_ok(self, presented: str | None) -> bool:
        """``api_key=None`` accepts any non-empty key (handy for benchmarks)."""
        if not presented:
            return False
        return self.api_key is None or presented == self.api_key


class WebSocketFake(FakeServer):
    """A fake whose protocol is WebSocket endpoints (Deepgram, Cartesia: one; Sarvam: two)."""

    path: str = "/"

    @property
    def paths(self) -> tuple[str, ...]:
        """The endpoints the handshake accepts (every other path answers 404)."""
        return (self.path,)

    def __init__(self, *, api_key: str | None, port: int) -> None:
        super().__init__(api_key=api_key, port=port)
        self._server: Server | None = None

    async def _serve(self, port: int) -> int:
        # No compression and no size cap: audio does not compress and benchmarks push a lot.
        self._server = await serve(
            self._handle,
            LOCALHOST,
            port,
            process_request=self._process_request,
            compression=None,
            max_size=None,
            ssl=self.tls.context() if self.tls else None,
        )
        return self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()  # also closes open connections, which ends every handler
            await self._server.wait_closed()
            self._server = None

    def _process_request(
        self, connection: ServerConnection, request: WsRequest
    ) -> WsResponse | None:
        """Answer the opening handshake the way the provider does before any message flows."""
        path, query = split_target(request.path)
        if path not in self.paths:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self._faults.fire("refuse"):
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        problem = self._handshake_problem(request.headers, query)
        if problem is not None:
            self.rejected += 1
            status, text = problem
            return connection.respond(status, text)
        return None

    def _handshake_problem(
        self, headers: Headers, query: Mapping[str, str]
    ) -> tuple[HTTPStatus, str] | None:
        """Return (status, body) to reject the handshake, or None to accept it."""
        raise NotImplementedError

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    async def _run_session(self, ws: ServerConnection, session: Any, record: Any) -> None:
        """Run one connection's session (or, in ``hang`` mode, only record what arrives)."""
        try:
            if self._faults.fire("hang"):
                await _drain(ws, session.record_only)
            else:
                await session.run()
        finally:
            await session.close()
            record.closed_at = time.monotonic()


async def send_json(ws: ServerConnection, payload: Mapping[str, Any]) -> bool:
    """Send one JSON text message; False if the peer is gone (a normal end, not an error)."""
    try:
        await ws.send(json.dumps(payload))
        return True
    except ConnectionClosed:
        return False


async def _drain(ws: ServerConnection, record: Callable[[str | bytes], None]) -> None:
    """Read and record everything, answer nothing: the ``hang`` fault."""
    with suppress(ConnectionClosed):
        async for message in ws:
            record(message)
