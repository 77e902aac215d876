"""Running the app under uvicorn: in the foreground (``irtrack serve``) or on a background thread
(``irtrack demo`` and the tests, which need a real server on a free port in their own process)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Annotated, Any

import typer
import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings

GRACEFUL_SHUTDOWN_S = 10


def uvicorn_config(settings: Settings, app: FastAPI | None = None) -> uvicorn.Config:
    """The same server settings for every way of running: limits come from ``Settings``."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    return uvicorn.Config(
        app if app is not None else create_app(settings),
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_body_bytes,  # a larger WebSocket message closes with 1009
        # wsproto: a refused handshake (the app's 4xx + JSON body) is a finished exchange there;
        # uvicorn's websockets-sansio logs each one as an ERROR (Kludex/uvicorn PR #3138)
        ws="wsproto",
        log_level=settings.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )


class GracefulServer(uvicorn.Server):
    """uvicorn, except that live streams get the answers they are owed before their sockets close.

    uvicorn closes WebSockets as the first step of shutting down, before the app's lifespan
    shutdown runs; the engine's ``finish_live_streams`` goes first so that no admitted frame of a
    live stream ends without its message.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.app.state.engine.finish_live_streams()
        await super().shutdown(sockets)


def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully."""
    app = create_app(settings)
    GracefulServer(uvicorn_config(settings, app), app).run()


class BackgroundServer:
    """A real uvicorn server on a free port, on a daemon thread, as a context manager.

    The socket is bound before the thread starts, so the port cannot be taken in between. The app
    (``self.app``) exists before the server starts, for callers that want to look inside.
    """

    def __init__(self, settings: Settings, startup_timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.startup_timeout_s = startup_timeout_s
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((settings.host, settings.port))
        self.port = self._socket.getsockname()[1]
        self.app = create_app(settings)
        self.server = GracefulServer(uvicorn_config(settings, self.app), self.app)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self._thread.join(GRACEFUL_SHUTDOWN_S + 15)
        self._socket.close()


def serve_command(
    host: Annotated[str | None, typer.Option(help="interface (default IRTRACK_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default IRTRACK_PORT)")] = None,
) -> None:
    """Serve the REST and WebSocket API (all other settings from IRTRACK_* variables)."""
    overrides: dict[str, Any] = {"host": host, "port": port}
    serve(Settings(**{key: value for key, value in overrides.items() if value is not None}))
