"""The agent's endpoints: Exotel's Connect applet URL, and the context fetch at the dynamic URL.

``GET /exotel/connect?CallSid=…`` is the Connect applet's "Dial whom: URL" in the transfer
flow (Voicebot -> Passthru (sync) -> on 302 Connect): it answers Exotel's Programmable
Connect JSON with the numbers of the department the call was transferred to, or
``"numbers": []`` (Exotel's "nobody dialled" branch) for a call with no transfer. Like
Passthru it reads the state store only: the caller waits in silence.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from loguru import logger

from bot.agent import connect_answer, context_payload, fetch_context, remember_context
from bot.server.runtime import Runtime, runtime_of

router = APIRouter()


@router.get("/exotel/connect")
async def exotel_connect(request: Request) -> JSONResponse:
    """Exotel's Programmable Connect: whom to dial for this CallSid (query, any case)."""
    rt = runtime_of(request)
    fields = {k.lower(): v for k, v in request.query_params.items()}
    call_sid = fields.get("callsid", "")
    agent = rt.rooms.agent if rt.rooms else None
    departments = agent.departments if agent else {}
    playback = agent.connect_playback if agent else ""
    with logger.contextualize(call_sid=call_sid):
        answer = await connect_answer(rt.store, call_sid, departments, playback=playback)
        logger.info(f"connect: dialling {len(answer['destination']['numbers'])} numbers")
    return JSONResponse(answer)


async def prefetch_context(
    rt: Runtime, fields: Mapping[str, str], custom: Mapping[str, str]
) -> None:
    """At the dynamic URL: fetch the call's context (no stream yet) and keep it under the
    CallSid for the stream's ``start``. Bounded by the webhook's timeout; never raises."""
    agent = rt.rooms.agent if rt.rooms else None
    lower = {k.lower(): v for k, v in fields.items()}
    call_sid = lower.get("callsid", "")
    if agent is None or not agent.context_url or not call_sid:
        return
    payload = context_payload(
        call_sid=call_sid,
        stream_sid=None,
        from_number=lower.get("callfrom") or lower.get("from") or "",
        to_number=lower.get("callto") or lower.get("to") or "",
        custom_parameters=dict(custom),
    )
    with logger.contextualize(call_sid=call_sid):
        result = await fetch_context(agent.context_url, payload, agent.context_timeout_secs)
        await remember_context(rt.store, call_sid, result)
