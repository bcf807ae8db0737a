"""The endpoints operators and platforms call: liveness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from bot.server.runtime import runtime_of

router = APIRouter()


class Health(BaseModel):
    status: str = Field(
        description='"ok"; "full" at the call limit (new streams are refused, still HTTP '
        '200: the process is healthy); "draining" while shutting down (HTTP 503).'
    )
    active_calls: int
    max_calls: int = Field(description="BOT_MAX_CALLS; 0 = no limit.")
    providers: dict[str, str]


@router.get("/healthz", response_model=Health)
async def healthz(request: Request) -> Any:
    """Liveness and readiness: 503 while draining so the router sends no new calls."""
    runtime = runtime_of(request)
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


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(runtime_of(request).metrics.render(), media_type="text/plain; version=0.0.4")
