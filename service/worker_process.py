"""``irtrack worker``: an inference worker of the scale-out deployment (API processes + Redis).

It runs the same :class:`InferenceWorker` as the embedded service, fed by
:class:`RedisWorkerPump` from the Redis shards it holds a lease on (and from the stateless
frames every worker shares), and answers each frame to the API process that sent it. It serves
``/healthz``, ``/readyz`` and ``/metrics`` for probes and Prometheus, nothing else.

When the inference thread dies (or the models do not load) the process stops itself, so that
its orchestrator restarts it; its shards move to the other workers meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import typer
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.metrics import ServiceMetrics
from service.server import uvicorn_config
from service.settings import Settings
from service.transport.redis_queue import RedisFrameQueue
from service.worker.redis_pump import RedisWorkerPump
from service.worker.runtime import ModelRuntime
from service.worker.worker import InferenceWorker

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0


def create_worker_app(settings: Settings) -> FastAPI:
    metrics = ServiceMetrics()
    queue = RedisFrameQueue(settings, role="worker")
    inference = InferenceWorker(queue, ModelRuntime(settings), settings, metrics)
    pump = RedisWorkerPump(queue, inference, settings, metrics)
    stopping = asyncio.Event()

    def ready() -> bool:
        return inference.ready.is_set() and inference.alive and pump.connected

    def alive() -> bool:
        return inference.load_error is None and (inference.alive or stopping.is_set())

    def stop_unless_asked(_: object) -> None:
        if not stopping.is_set():
            log.error("the worker can no longer serve; stopping the process to be restarted")
            os.kill(os.getpid(), signal.SIGTERM)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        inference.start()
        serving = asyncio.create_task(pump.run(stopping))
        serving.add_done_callback(stop_unless_asked)
        try:
            yield
        finally:
            stopping.set()
            await serving  # answers the frames in hand, gives the shards back
            await asyncio.to_thread(inference.stop, DRAIN_TIMEOUT_S)
            await queue.aclose()

    metrics.ready.set_function(lambda: float(ready()))
    app = FastAPI(title="irtrack worker", version="0.1.0", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if not alive():
            return _status(503, "not_alive", "the inference thread is not running")
        return _status(200, "ok")

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not ready():
            return _status(503, "not_ready", "loading the models or connecting to Redis")
        return _status(200, "ready")

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def _status(status: int, code: str, message: str = "") -> JSONResponse:
    if status == 200:
        return JSONResponse({"status": code})
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def worker_command(
    host: Annotated[str | None, typer.Option(help="interface (default IRTRACK_HOST)")] = None,
    port: Annotated[
        int | None, typer.Option(help="metrics/probe port (default IRTRACK_PORT)")
    ] = None,
) -> None:
    """Run an inference worker: frames from Redis (IRTRACK_REDIS_URL), results back to the API."""
    overrides: dict[str, Any] = {"host": host, "port": port}
    settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    if settings.redis_url is None:
        raise typer.BadParameter("a worker takes its frames from Redis: set IRTRACK_REDIS_URL")
    uvicorn.Server(uvicorn_config(settings, create_worker_app(settings))).run()
