"""The endpoints Exotel calls: the Voicebot stream, the dynamic URL and the Passthru applet.

HTTP concerns only: authentication, query parameters, forwarded headers, status codes. The call
itself is run by the runtime (``bot.server.runtime``) and ``bot.telephony``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, WebSocket, status
from fastapi.responses import JSONResponse, PlainTextResponse
from loguru import logger
from pydantic import BaseModel, Field

from bot.agent import passthru_answer
from bot.config import Settings
from bot.server.agent_routes import prefetch_context
from bot.server.runtime import DRAINING, Runtime, runtime_of
from serializers.exotel import DEFAULT_SAMPLE_RATE, SUPPORTED_SAMPLE_RATES

WS_PATH = "/exotel/ws"
# The ASGI extension that lets a WebSocket route answer the upgrade with a plain HTTP response
# (uvicorn's websockets implementations and Starlette's TestClient have it).
DENIAL_EXTENSION = "websocket.http.response"
# Exotel's own call parameters on the dynamic-URL request; everything else is the user's.
EXOTEL_CALL_FIELDS = {
    "callsid", "callfrom", "callto", "from", "to", "direction", "calltype", "created",
    "dialcallduration", "starttime", "endtime", "currenttime", "flow_id", "tenant_id",
    "dialwhomnumber", "digits", "recordingurl", "outgoingphonenumber", "callstatus",
    "forwardedfrom", "sample-rate", "sample_rate",
}  # fmt: skip
MAX_CUSTOM_PARAMETERS = 3
MAX_CUSTOM_CHARS = 256


class StreamUrl(BaseModel):
    """The answer Exotel expects from a dynamic-URL endpoint."""

    url: str = Field(description="The wss:// URL Exotel should stream this call to.")


def parse_sample_rate(raw: str | None) -> int:
    """``?sample-rate=`` (or ``sample_rate``): 8000, 16000 or 24000; default 8000."""
    if raw is None or raw == "":
        return DEFAULT_SAMPLE_RATE
    try:
        rate = int(raw)
    except ValueError:
        rate = -1
    if rate not in SUPPORTED_SAMPLE_RATES:
        logger.warning(f"unsupported sample-rate {raw[:16]!r}; using {DEFAULT_SAMPLE_RATE} Hz")
        return DEFAULT_SAMPLE_RATE
    return rate


class BasicAuth:
    """Checks ``Authorization: Basic`` against EXOTEL_BASIC_AUTH in constant time."""

    def __init__(self, credentials: str | None) -> None:
        self._expected = credentials.encode() if credentials else None

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def allows(self, header: str | None) -> bool:
        if self._expected is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return secrets.compare_digest(given, self._expected)


def public_base(request: Request, settings: Settings) -> tuple[str, str]:
    """(scheme, host) as the caller sees us, honouring a PaaS router's forwarded headers."""
    if settings.public_url:
        scheme, _, host = settings.public_url.rstrip("/").partition("://")
        return scheme, host
    proto = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or "localhost"
    return proto, host.split(",")[0].strip()


def _auth(rt: Runtime) -> BasicAuth:
    creds = rt.settings.exotel_basic_auth
    return BasicAuth(creds.get_secret_value() if creds else None)


router = APIRouter()


@router.websocket(WS_PATH)
async def exotel_stream(websocket: WebSocket) -> None:
    """Exotel's Voicebot stream. Query: ``sample-rate`` = 8000 | 16000 | 24000.

    Refusals happen on the upgrade, before accept and before any pipeline exists: bad auth
    is closed (uvicorn answers HTTP 403); full or draining is answered HTTP 503, which a
    balancer (HAProxy ``retry-on 503``) retries on another instance.
    """
    rt = runtime_of(websocket)
    if not _auth(rt).allows(websocket.headers.get("authorization")):
        # The header is never logged.
        logger.warning(f"refused a stream from {_peer(websocket)}: missing or wrong auth")
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    refusal = rt.reserve_slot()
    if refusal is not None:
        await _refuse(websocket, rt, refusal)
        return
    params = websocket.query_params
    rate = parse_sample_rate(params.get("sample-rate") or params.get("sample_rate"))
    try:
        await websocket.accept()  # at once: Exotel fails streams whose handshake takes 10 s
    except Exception as e:  # the caller went away during the upgrade: no call, no slot
        rt.release_slot()
        logger.warning(f"stream from {_peer(websocket)} lost during the upgrade: {e!r}")
        return
    await rt.run_call(websocket, rate)


async def _refuse(websocket: WebSocket, rt: Runtime, reason: str) -> None:
    """HTTP 503 on the upgrade (never accept-then-close: a balancer cannot retry that)."""
    if reason == DRAINING:
        logger.warning("refused a stream: shutting down")
    else:
        # One call too many slows every call in the process (bench/capacity.py).
        logger.warning(
            f"refused a stream: {rt.admitted} calls already, the limit "
            f"(BOT_MAX_CALLS) is {rt.settings.bot_max_calls}; add an instance"
        )
    rt.metrics.calls_refused.labels(reason=reason).inc()
    if DENIAL_EXTENSION in websocket.scope.get("extensions", {}):
        body = {"status": reason, "active_calls": rt.active_calls}
        await websocket.send_denial_response(
            JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        )
    else:  # an ASGI server without the denial extension: the best it can do
        await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER)


@router.api_route("/exotel/url", methods=["GET", "POST"], response_model=StreamUrl)
async def dynamic_url(
    request: Request,
    sample_rate: Annotated[int | None, Query(alias="sample-rate")] = None,
) -> Any:
    """Exotel's dynamic-URL endpoint: answers ``{"url": "wss://…/exotel/ws?…"}``.

    Passes ``sample-rate`` (default: BOT_SAMPLE_RATE) and up to three custom parameters
    (any query or form field that is not one of Exotel's call fields) through to the
    stream URL. With EXOTEL_BASIC_AUTH set, the request must carry the same Basic auth,
    and the URL carries the credentials so Exotel can authenticate the stream.
    """
    rt = runtime_of(request)
    if not _auth(rt).allows(request.headers.get("authorization")):
        return JSONResponse(
            {"detail": "unauthorized"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="exotel"'},
        )
    fields = dict(request.query_params)
    if request.method == "POST":
        fields.update(await _form_or_json(request))
    rate = parse_sample_rate(str(sample_rate) if sample_rate else None)
    if sample_rate is None:
        rate = rt.settings.bot_sample_rate
    custom = _custom_parameters(fields)
    query = {"sample-rate": str(rate), **custom}
    await prefetch_context(rt, fields, custom)  # bounded by [agent] context_timeout_secs
    scheme, host = public_base(request, rt.settings)
    ws_scheme = "wss" if scheme in ("https", "wss") else "ws"
    creds = rt.settings.exotel_basic_auth
    userinfo = ""
    if creds:
        user, _, password = creds.get_secret_value().partition(":")
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return StreamUrl(url=f"{ws_scheme}://{userinfo}{host}{WS_PATH}?{urlencode(query)}")


@router.api_route("/exotel/passthru", methods=["GET", "POST"])
async def passthru(request: Request) -> PlainTextResponse:
    """Exotel's Passthru applet after the stream: 302 for a call the bot transferred (the
    flow's branch to the Connect applet), 200 for every other call, unknown ones included.

    Answered from the state store only (the caller waits in silence); reading changes
    nothing, so Exotel may ask twice.
    """
    fields = dict(request.query_params)
    if request.method == "POST":
        fields.update(await _form_or_json(request))
    stream = parse_passthru_stream(fields)
    call_sid = fields.get("CallSid", "")
    with logger.contextualize(call_sid=call_sid, stream_sid=stream.get("StreamSID", "")):
        answer = await passthru_answer(runtime_of(request).store, call_sid)
        logger.info(
            "passthru: status={} disconnected_by={} duration={} error={} answer={}",
            stream.get("Status"),
            stream.get("DisconnectedBy"),
            stream.get("Duration"),
            stream.get("Error") or stream.get("DetailedStatus") or "-",
            answer,
        )
    runtime_of(request).publish_call_status(fields)  # call.status, in a task of its own
    if answer == 302:
        return PlainTextResponse("transferred", status_code=302)
    return PlainTextResponse("ok")


def _custom_parameters(fields: dict[str, str]) -> dict[str, str]:
    custom = {k: v for k, v in fields.items() if k.lower() not in EXOTEL_CALL_FIELDS}
    kept = dict(list(custom.items())[:MAX_CUSTOM_PARAMETERS])
    if len(custom) > len(kept):
        logger.warning(f"Exotel takes {MAX_CUSTOM_PARAMETERS} custom parameters; dropped the rest")
    if len(urlencode(kept)) > MAX_CUSTOM_CHARS:
        logger.warning(f"custom parameters exceed Exotel's {MAX_CUSTOM_CHARS} characters")
    return kept


def parse_passthru_stream(fields: dict[str, str]) -> dict[str, str]:
    """Stream metadata from flat ``Stream[Key]`` fields or one JSON ``Stream`` field."""
    stream = {k[7:-1]: v for k, v in fields.items() if k.startswith("Stream[") and k.endswith("]")}
    raw = fields.get("Stream")
    if raw:
        try:
            decoded = json.loads(raw)
            if isinstance(decoded, dict):
                stream.update({str(k): str(v) for k, v in decoded.items()})
        except ValueError:
            logger.warning("passthru Stream field is not JSON; ignored")
    return stream


async def _form_or_json(request: Request) -> dict[str, str]:
    try:
        if "json" in request.headers.get("content-type", ""):
            body = await request.json()
            return {str(k): str(v) for k, v in body.items()} if isinstance(body, dict) else {}
        form = await request.form()
        return {k: str(v) for k, v in form.items()}
    except Exception:
        logger.warning("could not read the request body; using the query only")
        return {}


def _peer(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "?"
