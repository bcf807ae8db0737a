"""Exotel's Calls API: place one outbound call (``POST /v1/Accounts/{sid}/Calls/connect.json``).

Two modes (agent-capabilities.md §2.1, §2.3):

* **flow** (``app_id``): ``Url=http://my.exotel.com/{sid}/exoml/start_voice/{app_id}`` runs the
  flow holding our Voicebot applet, so a transfer (Passthru -> Connect) can still follow;
* **Connect Voice AI** (``stream_url``): ``StreamUrl`` + ``StreamType=bidirectional`` straight to
  our WebSocket, no flow. Closing the socket hangs up, so such a call **cannot be transferred**;
  use it for bot-only campaigns.

Retries: 429 (Exotel's 200-a-minute limit) and 5xx (Exotel answers 500/504 when it could not
originate the call) are retried with exponential backoff, a bounded number of times, as is a
refused connection. A timeout is *not* retried: the call may already be ringing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from loguru import logger

DEFAULT_API_URL = "https://api.in.exotel.com"
"""Exotel's Mumbai cluster (``https://api.exotel.com`` is Singapore)."""

CUSTOM_FIELD_MAX = 128
STREAM_URL_MAX = 600
BAD_CREDENTIALS = "bad credentials: check EXOTEL_API_KEY / EXOTEL_API_TOKEN / EXOTEL_ACCOUNT_SID"


class ExotelApiError(RuntimeError):
    """Exotel refused or failed the request.

    ``placed`` says what we know about the call: False = certainly not placed (safe to try
    again later), None = unknown (a timeout after the request went out; never dial again
    blindly).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        placed: bool | None = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.placed = placed


class ExotelAuthError(ExotelApiError):
    """401/403: the key, token or account SID is wrong; nothing will work until it is fixed."""


class ExotelRateLimited(ExotelApiError):
    """429 still after every retry: slow down (``--rate``) and try again later."""


@dataclass(frozen=True)
class PlacedCall:
    """Exotel's answer to a placed call: its CallSid and status (``in-progress``, ``queued``)."""

    call_sid: str
    status: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class ExotelClient:
    """One account's Calls API over a shared aiohttp session (create it inside the event loop)."""

    def __init__(
        self,
        account_sid: str,
        api_key: str,
        api_token: str,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 15.0,
        *,
        max_attempts: int = 4,
        backoff_secs: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        missing = [
            name
            for name, value in (
                ("EXOTEL_ACCOUNT_SID", account_sid),
                ("EXOTEL_API_KEY", api_key),
                ("EXOTEL_API_TOKEN", api_token),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"set {', '.join(missing)} (Exotel dashboard -> API settings)")
        self.account_sid = account_sid
        self.api_url = api_url.rstrip("/")
        self._auth = aiohttp.BasicAuth(api_key, api_token)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff_secs
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ExotelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def connect_url(self) -> str:
        return f"{self.api_url}/v1/Accounts/{self.account_sid}/Calls/connect.json"

    def flow_url(self, app_id: str) -> str:
        """The ExoML URL that starts flow ``app_id`` (the one with our Voicebot applet)."""
        return f"http://my.exotel.com/{self.account_sid}/exoml/start_voice/{app_id}"

    def connect_form(
        self,
        to: str,
        caller_id: str,
        *,
        app_id: str | None = None,
        stream_url: str | None = None,
        custom_field: str | None = None,
        status_callback: str | None = None,
        time_limit: int | None = None,
        time_out: int = 30,
    ) -> list[tuple[str, str]]:
        """The form fields of one ``Calls/connect`` request, in order; raises ValueError."""
        if (app_id is None) == (stream_url is None):
            raise ValueError(
                "give exactly one of app_id (flow mode) or stream_url (Connect Voice AI)"
            )
        if custom_field is not None and len(custom_field) > CUSTOM_FIELD_MAX:
            raise ValueError(
                f"CustomField is {len(custom_field)} characters; Exotel keeps {CUSTOM_FIELD_MAX}. "
                "Store the data with store_call_variables() and pass its token"
            )
        form = [("From", to), ("CallerId", caller_id)]
        if app_id is not None:
            form += [("Url", self.flow_url(app_id)), ("CallType", "trans")]
        else:
            assert stream_url is not None
            if len(stream_url) > STREAM_URL_MAX:
                raise ValueError(f"StreamUrl is longer than Exotel's {STREAM_URL_MAX} characters")
            form += [("StreamUrl", stream_url), ("StreamType", "bidirectional")]
        if time_limit is not None:
            form.append(("TimeLimit", str(int(time_limit))))
        form.append(("TimeOut", str(int(time_out))))
        if custom_field is not None:
            form.append(("CustomField", custom_field))
        if status_callback is not None:
            form += [
                ("StatusCallback", status_callback),
                ("StatusCallbackEvents[0]", "terminal"),
                ("StatusCallbackEvents[1]", "answered"),
                ("StatusCallbackContentType", "application/json"),
            ]
        return form

    async def connect_call(
        self,
        to: str,
        caller_id: str,
        *,
        app_id: str | None = None,
        stream_url: str | None = None,
        custom_field: str | None = None,
        status_callback: str | None = None,
        time_limit: int | None = None,
        time_out: int = 30,
    ) -> PlacedCall:
        """Place a call to ``to`` from ExoPhone ``caller_id``; raises :class:`ExotelApiError`."""
        form = self.connect_form(
            to,
            caller_id,
            app_id=app_id,
            stream_url=stream_url,
            custom_field=custom_field,
            status_callback=status_callback,
            time_limit=time_limit,
            time_out=time_out,
        )
        for attempt in range(1, self._max_attempts + 1):
            try:
                return await self._post_once(form)
            except ExotelApiError as exc:
                retryable = exc.status == 429 or (exc.status or 0) >= 500 or exc.code == "connect"
                if not retryable or exc.placed is not False or attempt == self._max_attempts:
                    raise
                delay = self._backoff * 2 ** (attempt - 1)
                logger.warning(f"Exotel Calls/connect: {exc}; retry {attempt} in {delay:.1f} s")
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def _post_once(self, form: list[tuple[str, str]]) -> PlacedCall:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                self.connect_url, data=form, auth=self._auth, headers={"Accept": "application/json"}
            ) as response:
                body = await response.text()
                return _parse_answer(response.status, body)
        except aiohttp.ClientConnectorError as exc:
            raise ExotelApiError(f"cannot reach {self.api_url}: {exc}", code="connect") from exc
        except TimeoutError as exc:
            raise ExotelApiError(
                f"Exotel did not answer within {self._timeout.total} s; the call may have been "
                "placed",
                placed=None,
            ) from exc
        except aiohttp.ClientError as exc:
            raise ExotelApiError(f"Exotel request failed: {exc}", placed=None) from exc


def _parse_answer(status: int, body: str) -> PlacedCall:
    """Exotel's JSON answer -> :class:`PlacedCall`, or the matching :class:`ExotelApiError`."""
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    rest = data.get("RestException") if isinstance(data.get("RestException"), dict) else None
    message = str(rest.get("Message")) if rest else body.strip()[:200] or f"HTTP {status}"
    code = str(rest["Code"]) if rest and rest.get("Code") is not None else None
    if status in (401, 403):
        raise ExotelAuthError(f"{BAD_CREDENTIALS} (Exotel: {message})", status=status, code=code)
    if status == 429:
        raise ExotelRateLimited(f"rate limited by Exotel: {message}", status=status, code=code)
    if status >= 500:
        raise ExotelApiError(f"Exotel HTTP {status}: {message}", status=status, code=code)
    if rest is not None or status >= 300:
        raise ExotelApiError(f"Exotel refused the call: {message}", status=status, code=code)
    call = data.get("Call")
    if not isinstance(call, dict) or not call.get("Sid"):
        raise ExotelApiError(
            f"Exotel answered HTTP {status} without Call.Sid: {body[:200]!r}",
            status=status,
            placed=None,
        )
    return PlacedCall(str(call["Sid"]), str(call.get("Status") or ""), call)
