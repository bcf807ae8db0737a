"""The calls page: recent calls and one call's story, as HTML and as JSON.

``GET /calls`` (``?outcome=transferred``) and ``GET /calls/{call_sid}`` render Jinja2 templates
(``bot/server/templates``, no build step, readable on a phone); ``GET /api/calls`` and
``GET /api/calls/{call_sid}`` answer the same data as JSON. The data is what
``bot.delivery.calls`` keeps in the state store at each call's end, so the page survives
restarts and shows the calls of every instance sharing a Redis.

Access: with ``ADMIN_BASIC_AUTH`` (``user:password``) every request needs those Basic
credentials (401 otherwise). Without it the page is served only when the server is bound to
a loopback address (local development); on any other address it answers 403 saying how to
turn it on, because a transcript is personal data.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from bot.delivery.calls import call_detail, recent_calls
from bot.delivery.events import OUTCOMES
from bot.delivery.outbox import deliveries_for_call
from bot.server.exotel_routes import BasicAuth
from bot.server.runtime import Runtime, runtime_of
from bot.state.base import StateUnavailable

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TIMELINE_WIDTH = 1000.0  # the SVG's viewBox width; the browser scales it to the screen
NO_AUTH_OFF_LOOPBACK = (
    "The calls page shows transcripts, so it needs a password on this host: set "
    "ADMIN_BASIC_AUTH=user:password (or [admin] basic_auth in the config file) and restart."
)

router = APIRouter()


def _bind_host(request: Request, runtime: Runtime) -> str:
    return str(getattr(request.app.state, "bind_host", None) or runtime.settings.host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _refusal(request: Request, runtime: Runtime) -> Response | None:
    """401/403 when this request may not see the page (see the module docstring)."""
    creds = runtime.settings.admin_basic_auth
    if creds is not None:
        if BasicAuth(creds.get_secret_value()).allows(request.headers.get("authorization")):
            return None
        return Response(
            "authentication required",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="calls", charset="UTF-8"'},
        )
    if _is_loopback(_bind_host(request, runtime)):
        return None
    return Response(NO_AUTH_OFF_LOOPBACK, status_code=403, media_type="text/plain")


def _outcome_filter(value: str | None) -> str | None:
    return value if value in OUTCOMES else None


@router.get("/api/calls")
async def api_calls(request: Request, outcome: str | None = None, limit: int = 50) -> Response:
    """The newest calls first: time, from, outcome, duration, turns, p50 response, language."""
    runtime = runtime_of(request)
    if (refused := _refusal(request, runtime)) is not None:
        return refused
    rows = await _rows(runtime, outcome, limit)
    if rows is None:
        return JSONResponse({"detail": "the state store is unavailable"}, status_code=503)
    return JSONResponse({"calls": rows})


@router.get("/api/calls/{call_sid}")
async def api_call(request: Request, call_sid: str) -> Response:
    """One call: the ``call.ended`` data, the timeline, the status, the webhook deliveries."""
    runtime = runtime_of(request)
    if (refused := _refusal(request, runtime)) is not None:
        return refused
    try:
        detail = await _detail(runtime, call_sid)
    except StateUnavailable:
        return JSONResponse({"detail": "the state store is unavailable"}, status_code=503)
    if detail is None:
        return JSONResponse({"detail": f"no call {call_sid} is kept"}, status_code=404)
    return JSONResponse(detail)


@router.get("/calls", response_class=HTMLResponse)
async def calls_page(request: Request, outcome: str | None = None) -> Response:
    runtime = runtime_of(request)
    if (refused := _refusal(request, runtime)) is not None:
        return refused
    rows = await _rows(runtime, outcome, 100)
    context = {
        "calls": rows or [],
        "unavailable": rows is None,
        "outcome": _outcome_filter(outcome),
        "outcomes": OUTCOMES,
    }
    return TEMPLATES.TemplateResponse(request, "calls.html", context)


@router.get("/calls/{call_sid}", response_class=HTMLResponse)
async def call_page(request: Request, call_sid: str) -> Response:
    runtime = runtime_of(request)
    if (refused := _refusal(request, runtime)) is not None:
        return refused
    try:
        detail = await _detail(runtime, call_sid)
    except StateUnavailable:
        detail = None
    if detail is None:
        context = {"call_sid": call_sid}
        return TEMPLATES.TemplateResponse(request, "missing.html", context, status_code=404)
    context = {**detail, "picture": timeline_picture(detail["timeline"])}
    return TEMPLATES.TemplateResponse(request, "call.html", context)


async def _rows(runtime: Runtime, outcome: str | None, limit: int) -> list[dict] | None:
    if runtime.store is None:
        return None
    try:
        limit = max(1, min(limit, 200))
        return await recent_calls(runtime.store, outcome=_outcome_filter(outcome), limit=limit)
    except StateUnavailable:
        return None


async def _detail(runtime: Runtime, call_sid: str) -> dict[str, Any] | None:
    if runtime.store is None:
        return None
    detail = await call_detail(runtime.store, call_sid)
    if detail is None:
        return None
    deliveries = await deliveries_for_call(runtime.store, call_sid)
    detail["deliveries"] = [d.to_json() for d in deliveries]
    return detail


def timeline_picture(timeline: dict[str, Any]) -> dict[str, Any]:
    """The timeline as SVG shapes in a 1000-wide viewBox: caller and bot speech, and marks.

    Drawn from the record the store keeps (speech spans, holding phrases, clears, keypad
    presses, errors), so the page needs no file and no plotting library at request time.
    """
    duration = max(float(timeline.get("duration_secs") or 0.0), 0.001)
    scale = TIMELINE_WIDTH / duration

    def spans(items: list[Any], y: float, kind: str) -> list[dict[str, Any]]:
        out = []
        for a, b in items:
            end = duration if b is None else b
            out.append({"x": a * scale, "y": y, "w": max(1.0, (end - a) * scale), "kind": kind})
        return out

    rects = spans(timeline.get("caller_speech") or [], 8, "caller")
    rects += spans(timeline.get("bot_speech") or [], 38, "bot")
    marks = [
        {"x": float(e["t"]) * scale, "kind": e["type"], "label": e.get("text") or e["type"]}
        for e in timeline.get("events") or []
        if e.get("t") is not None
    ]
    ticks = [{"x": t * scale, "label": f"{t:g}s"} for t in _tick_times(duration) if t <= duration]
    return {"rects": rects, "marks": marks, "ticks": ticks, "duration": duration}


def _tick_times(duration: float) -> list[float]:
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if duration / s <= 8)
    return [float(i * step) for i in range(int(duration // step) + 1)]
