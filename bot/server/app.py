"""HTTP and WebSocket endpoints Exotel (and operators) talk to.

The server knows HTTP: authentication, query parameters, forwarded headers, status codes.
Calls themselves are run by ``bot.server.runtime`` / ``bot.telephony.call``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import signal
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import uvicorn
from fastapi import FastAPI, Query, Request, WebSocket, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from loguru import logger
from pydantic import BaseModel, Field

from bot.config import Settings, load_settings
from bot.server.runtime import Runtime
from serializers.exotel import DEFAULT_SAMPLE_RATE, SUPPORTED_SAMPLE_RATES

WS_PATH = "/exotel/ws"
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


class Health(BaseModel):
    status: str = Field(
        description='"ok"; "full" at the call limit (new streams are refused, still HTTP '
        '200: the process is healthy); "draining" while shutting down (HTTP 503).'
    )
    active_calls: int
    max_calls: int = Field(description="BOT_MAX_CALLS; 0 = no limit.")
    providers: dict[str, str]


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


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """The bot's ASGI app. ``runtime`` lets tests inject one; otherwise it starts at lifespan."""
    state: dict[str, Any] = {"runtime": runtime}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if state["runtime"] is None:
            state["runtime"] = await Runtime.start(settings or load_settings())
        yield
        logger.info("server stopped")

    app = FastAPI(
        title="Exotel voice bot",
        description="Answers Exotel Voicebot streams with a Pipecat pipeline per call.",
        lifespan=lifespan,
    )

    def rt() -> Runtime:
        return state["runtime"]

    def auth() -> BasicAuth:
        creds = rt().settings.exotel_basic_auth
        return BasicAuth(creds.get_secret_value() if creds else None)

    @app.websocket(WS_PATH)
    async def exotel_stream(websocket: WebSocket) -> None:
        """Exotel's Voicebot stream. Query: ``sample-rate`` = 8000 | 16000 | 24000."""
        if not auth().allows(websocket.headers.get("authorization")):
            # Refused on the upgrade, before any pipeline exists. The header is never logged.
            logger.warning(f"refused a stream from {_peer(websocket)}: missing or wrong auth")
            await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
            return
        if rt().draining:
            logger.warning("refused a stream: shutting down")
            rt().metrics.calls_refused.labels(reason="draining").inc()
            await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER)
            return
        if rt().at_capacity:
            # One call too many slows every call in the process (bench/capacity.py).
            logger.warning(
                f"refused a stream: {rt().admitted} calls already, the limit "
                f"(BOT_MAX_CALLS) is {rt().settings.bot_max_calls}; add an instance"
            )
            rt().metrics.calls_refused.labels(reason="full").inc()
            await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER)
            return
        params = websocket.query_params
        rate = parse_sample_rate(params.get("sample-rate") or params.get("sample_rate"))
        await websocket.accept()  # at once: Exotel fails streams whose handshake takes 10 s
        await rt().run_call(websocket, rate)

    @app.api_route("/exotel/url", methods=["GET", "POST"], response_model=StreamUrl)
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
        if not auth().allows(request.headers.get("authorization")):
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
            rate = rt().settings.bot_sample_rate
        query = {"sample-rate": str(rate), **_custom_parameters(fields)}
        scheme, host = public_base(request, rt().settings)
        ws_scheme = "wss" if scheme in ("https", "wss") else "ws"
        creds = rt().settings.exotel_basic_auth
        userinfo = ""
        if creds:
            user, _, password = creds.get_secret_value().partition(":")
            userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        return StreamUrl(url=f"{ws_scheme}://{userinfo}{host}{WS_PATH}?{urlencode(query)}")

    @app.api_route("/exotel/passthru", methods=["GET", "POST"])
    async def passthru(request: Request) -> PlainTextResponse:
        """Exotel's Passthru applet after the stream: logged with the call's ids; 200 OK."""
        fields = dict(request.query_params)
        if request.method == "POST":
            fields.update(await _form_or_json(request))
        stream = parse_passthru_stream(fields)
        call_sid = fields.get("CallSid", "")
        with logger.contextualize(call_sid=call_sid, stream_sid=stream.get("StreamSID", "")):
            logger.info(
                "passthru: status={} disconnected_by={} duration={} error={}",
                stream.get("Status"),
                stream.get("DisconnectedBy"),
                stream.get("Duration"),
                stream.get("Error") or stream.get("DetailedStatus") or "-",
            )
        return PlainTextResponse("ok")

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Any:
        """Liveness and readiness: 503 while draining so the router sends no new calls."""
        runtime = rt()
        body = Health(
            status="draining" if runtime.draining else "full" if runtime.at_capacity else "ok",
            active_calls=runtime.active_calls,
            max_calls=runtime.settings.bot_max_calls,
            providers={
                "stt": runtime.choice.stt.name,
                "llm": runtime.choice.llm.name,
                "tts": runtime.choice.tts.name,
            },
        )
        code = 503 if runtime.draining else 200
        return JSONResponse(body.model_dump(), status_code=code)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(rt().metrics.render(), media_type="text/plain; version=0.0.4")

    app.state.runtime = lambda: state["runtime"]
    return app


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


class DrainingServer(uvicorn.Server):
    """uvicorn that drains live calls on the first SIGTERM (how a PaaS restarts a dyno).

    New streams are refused and /healthz answers 503 while live calls finish, for up to
    SHUTDOWN_DRAIN_SECS; the rest then hear the goodbye. A second signal exits at once.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_secs: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_secs = drain_secs
        self._drain_task: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        runtime = self._app.state.runtime()
        if sig != signal.SIGTERM or self._drain_task is not None or runtime is None:
            super().handle_exit(sig, frame)
            return
        logger.info("SIGTERM: draining before exit")
        self._drain_task = asyncio.get_event_loop().create_task(self._drain(runtime))

    async def _drain(self, runtime: Runtime) -> None:
        try:
            await runtime.drain(self._drain_secs)
        finally:
            self.should_exit = True


def run_server(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT, or SIGTERM after draining (``python -m bot serve``)."""
    app = create_app(settings)
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
