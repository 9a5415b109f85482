"""Liveness, readiness and Prometheus metrics: no key, and never queued behind the models."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from airside.server.metrics import REGISTRY, observe_pool

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The store answers and the models are loaded")
async def readyz(request: Request) -> JSONResponse:
    airside = request.app.state.airside
    checks: dict[str, str] = {}
    try:
        with airside.db.session(readonly=True) as s:
            s.execute(text("SELECT 1"))
        checks["store"] = "ok"
    except Exception as e:  # a readiness probe reports, it does not raise
        checks["store"] = type(e).__name__
    checks["models"] = "ok" if airside.analyzer_loaded else "loading"
    checks["server"] = "ok" if request.app.state.ready else "starting"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    observe_pool(request.app.state.pool)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
