"""Liveness, readiness and Prometheus metrics: unauthenticated, for probes and scrapers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.errors import NotAlive, NotReady
from service.routes.deps import EngineDep
from service.schemas import Error, Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Error}})
async def healthz(engine: EngineDep) -> Health:
    """200 while the process can serve (or is still loading); 503 once the worker is dead."""
    if not engine.alive:
        raise NotAlive("the inference worker is not running; restart the service")
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Error}})
async def readyz(engine: EngineDep) -> Health:
    """200 only when the models are loaded and warmed up and the queue backend answers."""
    reason = await engine.not_ready_reason()
    if reason is not None:
        raise NotReady(reason, retry_after_s=engine.settings.retry_after_s)
    return Health(status="ready")


@router.get("/metrics", response_class=Response)
async def metrics(engine: EngineDep) -> Response:
    """Prometheus text exposition format."""
    return Response(engine.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
