"""The application factory: settings -> engine -> FastAPI app with routes and the error model.

``create_app`` builds everything from one ``Settings``; each app has its own engine and metrics
registry, so tests can run several side by side. The lifespan starts the engine (the worker loads
and warms up the models in the background, /readyz stays 503 until it is done) and, on shutdown,
answers every waiting frame and lets the worker finish the ones it holds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.api.engine import Engine
from service.errors import InvalidParameter, ServiceError
from service.metrics import ServiceMetrics
from service.routes import detectors, frames, health, live, streams, viewer, watch
from service.routes.deps import refuse_handshake, require_api_key
from service.settings import Settings
from service.transport.queue import InProcessQueue
from service.transport.redis_queue import RedisFrameQueue
from service.transport.remote import RemoteWorkers

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else Settings()
    engine = _engine(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.close()

    app = FastAPI(
        title="irtrack",
        summary="Real-time infrared small-target detection and tracking.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    authenticated = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(detectors.router, dependencies=authenticated)
    app.include_router(frames.router, dependencies=authenticated)
    app.include_router(streams.router, dependencies=authenticated)
    app.include_router(live.router)  # checks the key itself, to refuse the handshake with JSON
    app.include_router(watch.router)  # the same; browsers may give the key as ?key=
    app.include_router(viewer.router)  # a static page holding no data: no key
    _install_error_handlers(app)
    return app


def _engine(settings: Settings) -> Engine:
    """The one place where the mode is chosen: embedded (the models on a thread of this process,
    frames through an in-process queue) or scale-out (``irtrack worker`` processes behind Redis,
    and then this process never imports torch)."""
    metrics = ServiceMetrics()
    if settings.redis_url is None:
        from service.worker.embedded import embedded_worker  # loads torch: embedded mode only

        embedded_queue = InProcessQueue()
        return Engine(
            settings, metrics, embedded_queue, embedded_worker(embedded_queue, settings, metrics)
        )
    redis_queue = RedisFrameQueue(settings, role="api")
    return Engine(settings, metrics, redis_queue, RemoteWorkers(redis_queue, settings, metrics))


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": {"code", "message"}}`` with its status."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_parameter", _problems(exc.errors()))

    @app.exception_handler(WebSocketRequestValidationError)
    async def invalid_handshake(websocket: WebSocket, exc: WebSocketRequestValidationError) -> None:
        await refuse_handshake(websocket, InvalidParameter(_problems(exc.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "internal error; see the service log")


def _problems(errors: Sequence[Any]) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )
