"""The dialer's endpoints: Exotel's status callbacks and ``POST /api/calls``.

* ``POST|GET /exotel/status/{token}``: Exotel's ``StatusCallback`` (JSON, form or query). Exotel
  does not sign callbacks, so the URL carries the deployment's unguessable token (kept in the
  state store, shared with the CLI that placed the call); without it, or with a wrong one: 403.
  A new event feeds the campaign that placed the call (through the store) and the post-call
  webhook's ``call.status`` (:func:`deliver_call_status`).
* ``POST /api/calls`` ``{"to": "+91…", "variables": {...}}`` with ``Authorization: Bearer
  BOT_API_TOKEN``: dials one call, answers ``{"call_sid": …}``.

HTTP only: the logic is the dialer room's (``bot.dialer``).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from loguru import logger
from pydantic import BaseModel, Field, ValidationError

from bot.delivery.events import call_status_event
from bot.dialer.contacts import InvalidNumber
from bot.dialer.exotel_api import ExotelApiError, ExotelAuthError
from bot.dialer.setup import (
    DialerConfigError,
    call_options,
    check_dialer_settings,
    exotel_client,
    place_call,
)
from bot.dialer.status import StatusEvent, handle_status_callback, shared_callback_token
from bot.server.runtime import Runtime, runtime_of

router = APIRouter()


@router.api_route("/exotel/status", methods=["GET", "POST"])
@router.api_route("/exotel/status/{token}", methods=["GET", "POST"])
async def status_callback(request: Request, token: str | None = None) -> PlainTextResponse:
    """Exotel's status callback; 403 without the right token, 200 for new and repeated events."""
    rt = runtime_of(request)
    expected = await shared_callback_token(rt.store)
    code, event = await handle_status_callback(
        rt.store,
        expected_token=expected,
        presented_token=token or request.query_params.get("token"),
        body=await request.body(),
        content_type=request.headers.get("content-type"),
        query=dict(request.query_params),
    )
    if code == 403:
        logger.warning("status callback refused: missing or wrong token in the URL")
    if event is not None:
        logger.info(
            f"status callback {event.event_type}: {event.status or '-'} for {event.call_sid}"
        )
        await deliver_call_status(rt, event)
    return PlainTextResponse("ok" if code == 200 else "refused", status_code=code)


async def deliver_call_status(rt: Runtime, event: StatusEvent) -> None:
    """The post-call webhook's ``call.status`` for a new status callback.

    Hook for the delivery room: the event is built here with ``bot.delivery``; it is handed to
    the runtime's outbox (``runtime.outbox.add``) once the delivery wiring gives the runtime
    one. Until then it is only logged. Never raises: a webhook problem must not make Exotel
    resend the callback.
    """
    fields: dict[str, Any] = {
        "CallSid": event.call_sid,
        "EventType": event.event_type,
        "Status": event.status,
        "ConversationDuration": event.conversation_duration,
        "RecordingUrl": event.recording_url,
        "AnsweredBy": event.answered_by,
    }
    try:
        webhook_event = call_status_event(fields, now=time.time())
        outbox = getattr(rt, "outbox", None)
        if outbox is not None:
            await outbox.add(webhook_event)
        else:
            logger.debug(f"call.status {webhook_event.id}: no outbox wired; not delivered")
    except Exception:
        logger.exception("could not queue the call.status webhook")


class DialRequest(BaseModel):
    """``POST /api/calls``: whom to call and the variables the call may use."""

    to: str = Field(description="The number to dial: +91XXXXXXXXXX or a 10-digit Indian number.")
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict)


@router.post("/api/calls")
async def dial_one(request: Request) -> JSONResponse:
    """Dial one call through Exotel; answers ``{"call_sid": …}``."""
    rt = runtime_of(request)
    refused = _bearer_refusal(rt, request.headers.get("authorization"))
    if refused is not None:
        return refused
    try:
        check_dialer_settings(rt.settings)
    except DialerConfigError as e:
        return JSONResponse({"detail": str(e)}, status_code=503)
    try:
        dial = DialRequest.model_validate(await request.json())
    except (ValueError, ValidationError) as e:
        return JSONResponse({"detail": f"bad request body: {e}"}, status_code=422)
    variables = {k: str(v) for k, v in dial.variables.items()}
    options = await call_options(rt.settings, rt.store)
    try:
        async with exotel_client(rt.settings) as client:
            placed = await place_call(rt.store, client, options, dial.to, variables)
    except InvalidNumber as e:
        return JSONResponse({"detail": f"to: {e}"}, status_code=422)
    except ExotelAuthError as e:
        return JSONResponse({"detail": str(e)}, status_code=503)
    except ExotelApiError as e:
        return JSONResponse({"detail": str(e)}, status_code=502)
    logger.info(f"dialled {placed.call_sid} through the API ({len(variables)} variables)")
    return JSONResponse({"call_sid": placed.call_sid, "status": placed.status})


def _bearer_refusal(rt: Runtime, header: str | None) -> JSONResponse | None:
    """None when ``Authorization: Bearer`` matches BOT_API_TOKEN; else the answer to send."""
    expected = rt.settings.bot_api_token
    if expected is None or not expected.get_secret_value():
        return JSONResponse(
            {"detail": "POST /api/calls is off: set BOT_API_TOKEN to enable it"}, status_code=503
        )
    scheme, _, presented = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        presented.strip().encode(), expected.get_secret_value().encode()
    ):
        return JSONResponse(
            {"detail": "unauthorized: send Authorization: Bearer <BOT_API_TOKEN>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None
