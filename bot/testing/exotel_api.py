"""A fake Exotel Calls API on 127.0.0.1: ``POST /v1/Accounts/{sid}/Calls/connect.json``.

It checks what the real one checks (form encoding, HTTP Basic with key:token; a 401
``RestException`` otherwise), answers Exotel's JSON ``{"Call": {"Sid", "Status": "in-progress"}}``,
answers 429 on demand (the first N requests, or every Kth), and records every request. Then it
"places the call" in the background, like Exotel after its answer:

* the number's scripted status (``scripts``: a status, or a list used one per call:
  ``completed``, ``busy``, ``no-answer``, ``failed``; default ``completed``);
* for ``completed``: posts the ``answered`` callback, awaits the test's ``on_call(placed)``
  (which plays the callee side: opens the stream, speaks, hangs up), then posts ``terminal``;
* otherwise posts only ``terminal`` with that status.

Callbacks go to the request's ``StatusCallback`` as JSON, as the dialer asks
(``StatusCallbackContentType=application/json``).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
from aiohttp import web
from loguru import logger

LOCALHOST = "127.0.0.1"
DEFAULT_SID = "fakeaccount"
DEFAULT_KEY = "fake-exotel-key"
DEFAULT_TOKEN = "fake-exotel-token"
CALLBACK_TIMEOUT_SECS = 5.0


@dataclass
class RecordedRequest:
    """One request the fake received, and what it answered."""

    path: str
    content_type: str
    form: dict[str, str]
    authorized: bool
    status: int


@dataclass
class FakePlacedCall:
    """A call the fake placed: its CallSid, the request's form and the scripted status."""

    call_sid: str
    form: dict[str, str]
    status: str
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    """The callback bodies posted, with the HTTP status each got (key ``_http``)."""

    @property
    def to(self) -> str:
        return self.form.get("From", "")

    @property
    def custom_field(self) -> str | None:
        return self.form.get("CustomField")


OnCall = Callable[[FakePlacedCall], Awaitable[dict[str, Any] | None]]
"""Plays the answered call; may return extra terminal fields (e.g. ``ConversationDuration``)."""


class FakeExotelApi:
    """Use as ``async with FakeExotelApi(...) as fake:``; ``fake.base_url`` is the API URL."""

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_SID,
        api_key: str = DEFAULT_KEY,
        api_token: str = DEFAULT_TOKEN,
        on_call: OnCall | None = None,
        scripts: dict[str, str | list[str]] | None = None,
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self._expected_auth = (
            "Basic " + base64.b64encode(f"{api_key}:{api_token}".encode()).decode()
        )
        self.on_call = on_call
        self.scripts: dict[str, str | list[str]] = dict(scripts or {})
        self.rate_limit_first = 0
        """Answer 429 to this many requests first."""
        self.rate_limit_every = 0
        """Answer 429 to every Kth request (0: never)."""
        self.fail_status: int | None = None
        """Answer every request with this HTTP status and a RestException (e.g. 400, 500)."""
        self.requests: list[RecordedRequest] = []
        self.calls: list[FakePlacedCall] = []
        self._port = port
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/Accounts/{sid}/Calls/connect.json", self._connect)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCALHOST, self._port)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_SECS)
        )
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self._port}"

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until every placed call has posted its callbacks."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def dialled(self) -> list[str]:
        """The numbers called, in order (one entry per placed call)."""
        return [call.to for call in self.calls]

    # -- the endpoint --------------------------------------------------------------------------

    async def _connect(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        form = {k: str(v) for k, v in (await request.post()).items()}
        authorized = request.headers.get("Authorization") == self._expected_auth
        n = next(self._counter)
        status, body = self._answer(request, content_type, form, authorized, n)
        self.requests.append(RecordedRequest(request.path, content_type, form, authorized, status))
        if status == 200:
            placed = FakePlacedCall(body["Call"]["Sid"], form, self._next_status(form["From"]))
            self.calls.append(placed)
            task = asyncio.create_task(self._place(placed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(body, status=status)

    def _answer(
        self,
        request: web.Request,
        content_type: str,
        form: dict[str, str],
        authorized: bool,
        n: int,
    ) -> tuple[int, dict[str, Any]]:
        if not authorized:
            return 401, _rest(401, "Authentication is required to view this resource.")
        if request.match_info["sid"] != self.account_sid:
            return 403, _rest(403, "Account SID does not match the credentials")
        if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return 400, _rest(400, f"unsupported content type {content_type}")
        if n <= self.rate_limit_first or (self.rate_limit_every and n % self.rate_limit_every == 0):
            return 429, _rest(429, "Too many requests")
        if self.fail_status is not None:
            return self.fail_status, _rest(self.fail_status, "scripted failure")
        missing = [key for key in ("From", "CallerId") if not form.get(key)]
        if missing or not (form.get("Url") or form.get("StreamUrl")):
            return 400, _rest(400, f"missing parameters: {', '.join(missing) or 'Url'}")
        sid = uuid.uuid4().hex
        call = {
            "Sid": sid,
            "ParentCallSid": None,
            "AccountSid": self.account_sid,
            "To": form.get("CallerId"),
            "From": form["From"],
            "Status": "in-progress",
            "Direction": "outbound-api",
            "AnsweredBy": None,
            "RecordingUrl": None,
            "Uri": f"/v1/Accounts/{self.account_sid}/Calls/{sid}.json",
        }
        return 200, {"Call": call}

    def _next_status(self, number: str) -> str:
        script = self.scripts.get(number, "completed")
        if isinstance(script, list):
            return script.pop(0) if len(script) > 1 else script[0]
        return script

    async def _place(self, placed: FakePlacedCall) -> None:
        await asyncio.sleep(0)  # Exotel answers the API before the call rings
        extra: dict[str, Any] = {}
        if placed.status == "completed":
            await self.post_status(placed, "answered", "in-progress")
            if self.on_call is not None:
                extra = await self.on_call(placed) or {}
        await self.post_status(placed, "terminal", placed.status, **extra)

    async def post_status(
        self, placed: FakePlacedCall, event_type: str, status: str, **extra: Any
    ) -> int | None:
        """Post one callback as Exotel would; returns the HTTP status (None: no callback URL)."""
        url = placed.form.get("StatusCallback")
        if not url or self._session is None:
            return None
        completed = status == "completed"
        body: dict[str, Any] = {
            "CallSid": placed.call_sid,
            "EventType": event_type,
            "Status": status,
            "From": placed.form.get("CallerId"),
            "To": placed.to,
            "Direction": "outbound-api",
            "CustomField": placed.custom_field,
            "RecordingUrl": None,
            "ConversationDuration": 42 if completed and event_type == "terminal" else 0,
            "Legs": [{"OnCallDuration": 42 if completed else 0, "Status": status}],
        }
        body.update(extra)
        try:
            async with self._session.post(url, json=body) as response:
                body["_http"] = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning(f"fake Exotel: status callback to {url} failed: {exc}")
            body["_http"] = None
        placed.callbacks.append(body)
        return body["_http"]


def _rest(status: int, message: str) -> dict[str, Any]:
    return {"RestException": {"Status": status, "Message": message, "Code": status * 100}}
