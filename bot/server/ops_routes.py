"""The endpoints operators and platforms call: liveness, readiness and Prometheus metrics.

``/healthz`` is liveness (the process works: 200 even while full or draining, so a Kubernetes
liveness probe never kills a draining pod); ``/ready`` is what a balancer or a readiness probe
asks before sending a new call.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from bot.server.runtime import READY, runtime_of

router = APIRouter()


class Health(BaseModel):
    status: str = Field(
        description='"ok"; "full" at the call limit (new streams are refused, still HTTP '
        '200: the process is healthy); "draining" while shutting down (still HTTP 200: '
        "liveness; /ready turns 503)."
    )
    active_calls: int
    max_calls: int = Field(description="BOT_MAX_CALLS; 0 = no limit.")
    providers: dict[str, str]


@router.get("/healthz", response_model=Health)
async def healthz(request: Request) -> Any:
    """Liveness: 200 while the process serves (calls go on while full or draining)."""
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
    return JSONResponse(body.model_dump())


class Ready(BaseModel):
    status: Literal["ready", "draining", "full", "state store down"] = Field(
        description='"ready" (HTTP 200) while this instance takes new calls; otherwise why '
        "not (HTTP 503): shutting down, at BOT_MAX_CALLS, or the shared state store "
        "unreachable for longer than STATE_DOWN_GRACE_SECS."
    )
    active_calls: int


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
async def ready(request: Request) -> Any:
    """Readiness for a balancer (HAProxy ``option httpchk GET /ready``, Kubernetes)."""
    runtime = runtime_of(request)
    status = runtime.readiness()
    body = Ready(status=status, active_calls=runtime.active_calls)
    return JSONResponse(body.model_dump(), status_code=200 if status == READY else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(runtime_of(request).metrics.render(), media_type="text/plain; version=0.0.4")
