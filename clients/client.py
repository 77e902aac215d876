"""The Python client of the irtrack service: REST calls and live streams, async and blocking.

Results are the service's own pydantic models (``service.schemas``): the client ships in the same
package as the service, so the two cannot drift apart, and every answer is validated on arrival.
``service.schemas`` needs only pydantic; importing the client loads no torch and no model.

Example:
    >>> async with AsyncClient("http://127.0.0.1:8000") as client:
    ...     result = await client.detect(frame)  # a 2-D uint8/uint16 array or an image file's bytes
    ...     async for event in client.stream("cam-1", frames, fps=25, when_busy="skip"):
    ...         print(event)
    >>> with Client("http://127.0.0.1:8000") as client:  # the same, blocking
    ...     for event in client.stream("cam-1", frames):
    ...         print(event)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import websockets
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection

from clients.live import Encoding, LiveStream, StreamEvent, StreamStats, WhenBusy, raw_bytes
from frames.options import DetectionOptions
from service.schemas import ModelInfo, ModelList, Result, StreamInfo, StreamList, WatchedResult

Image = np.ndarray | bytes | Path  # pixels (sent raw) or an encoded PNG/TIFF/JPEG file
Model = TypeVar("Model", bound=BaseModel)
Item = TypeVar("Item")
Answer = TypeVar("Answer")


class IrtrackError(Exception):
    """An error answer of the service: ``{"error": {"code", "message"}}`` and its status."""

    def __init__(
        self, status: int, code: str, message: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s  # given with 429 and 503


@dataclass(frozen=True)
class _Call(Generic[Answer]):
    """One REST call, described once and sent by either client: the request and how its
    response is read (so the blocking and the asyncio client cannot drift apart)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Answer]
    request: dict[str, Any] = field(default_factory=dict)  # httpx's params= and content=

    @staticmethod
    def ready() -> _Call[bool]:
        return _Call("GET", "/readyz", lambda response: response.status_code == 200)

    @staticmethod
    def models() -> _Call[list[ModelInfo]]:
        return _Call("GET", "/v1/models", lambda response: _parse(response, ModelList).models)

    @staticmethod
    def detect(
        image: Image, model: str | None, mask: bool, threshold: float | None
    ) -> _Call[Result]:
        params, content = _frame_request(image, model=model, mask=mask, threshold=threshold)
        return _Call(
            "POST",
            "/v1/detect",
            lambda response: _parse(response, Result),
            {"params": params, "content": content},
        )

    @staticmethod
    def send_frame(
        stream_id: str,
        image: Image,
        model: str | None,
        seq: int | None,
        timestamp: float | None,
        mask: bool,
        threshold: float | None,
    ) -> _Call[Result]:
        params, content = _frame_request(image, model, mask, seq, timestamp, threshold)
        return _Call(
            "POST",
            _stream_path(stream_id, "/frames"),
            lambda response: _parse(response, Result),
            {"params": params, "content": content},
        )

    @staticmethod
    def streams() -> _Call[list[StreamInfo]]:
        return _Call("GET", "/v1/streams", lambda response: _parse(response, StreamList).streams)

    @staticmethod
    def stream_info(stream_id: str) -> _Call[StreamInfo | None]:
        return _Call(
            "GET",
            _stream_path(stream_id),
            lambda response: None if response.status_code == 404 else _parse(response, StreamInfo),
        )

    @staticmethod
    def delete_stream(stream_id: str) -> _Call[None]:
        return _Call("DELETE", _stream_path(stream_id), _raise_for_error)

    @staticmethod
    def set_stream_options(
        stream_id: str, options: DetectionOptions, model: str | None
    ) -> _Call[DetectionOptions]:
        return _Call(
            "PUT",
            _stream_path(stream_id, "/options"),
            lambda response: _parse(response, DetectionOptions),
            {"json": options.model_dump(mode="json"), "params": {"model": model} if model else {}},
        )

    @staticmethod
    def stream_options(stream_id: str) -> _Call[DetectionOptions | None]:
        return _Call(
            "GET",
            _stream_path(stream_id, "/options"),
            lambda response: (
                None if response.status_code == 404 else _parse(response, DetectionOptions)
            ),
        )

    @staticmethod
    def clear_stream_options(stream_id: str) -> _Call[None]:
        return _Call("DELETE", _stream_path(stream_id, "/options"), _raise_for_error)


class _Endpoint:
    """Where the service is and how to talk to it: what both clients hold."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout_s: float = 60.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def _http_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "headers": _auth(self.api_key),
            "timeout": self.timeout_s,
        }


class AsyncClient(_Endpoint):
    """The service over asyncio (httpx for REST, websockets for live streams)."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout_s: float = 60.0
    ) -> None:
        super().__init__(base_url, api_key=api_key, timeout_s=timeout_s)
        self._http = httpx.AsyncClient(**self._http_options())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ready(self) -> bool:
        """Whether the service is loaded, warmed up and able to take frames."""
        return await self._call(_Call.ready())

    async def models(self) -> list[ModelInfo]:
        return await self._call(_Call.models())

    async def detect(
        self,
        image: Image,
        *,
        model: str | None = None,
        mask: bool = False,
        threshold: float | None = None,
    ) -> Result:
        """One image, stateless (no window, no tracker); ``threshold`` overrides the service's."""
        return await self._call(_Call.detect(image, model, mask, threshold))

    async def send_frame(
        self,
        stream_id: str,
        image: Image,
        *,
        model: str | None = None,
        seq: int | None = None,
        timestamp: float | None = None,
        mask: bool = False,
        threshold: float | None = None,
    ) -> Result:
        """One frame of a stream over REST (its window and tracker are used and updated)."""
        return await self._call(
            _Call.send_frame(stream_id, image, model, seq, timestamp, mask, threshold)
        )

    async def streams(self) -> list[StreamInfo]:
        return await self._call(_Call.streams())

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        """The stream's state and counters; None if the service has no such stream."""
        return await self._call(_Call.stream_info(stream_id))

    async def delete_stream(self, stream_id: str) -> None:
        await self._call(_Call.delete_stream(stream_id))

    async def set_stream_options(
        self, stream_id: str, options: DetectionOptions, *, model: str | None = None
    ) -> DetectionOptions:
        """Set the stream's threshold, ignore regions and report policy (a new id starts it)."""
        return await self._call(_Call.set_stream_options(stream_id, options, model))

    async def stream_options(self, stream_id: str) -> DetectionOptions | None:
        return await self._call(_Call.stream_options(stream_id))

    async def clear_stream_options(self, stream_id: str) -> None:
        await self._call(_Call.clear_stream_options(stream_id))

    async def _call(self, call: _Call[Answer]) -> Answer:
        return call.parse(await self._http.request(call.method, call.path, **call.request))

    def stream(
        self,
        stream_id: str,
        frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
        *,
        model: str | None = None,
        mask: bool = False,
        threshold: float | None = None,
        max_in_flight: int = 2,
        fps: float | None = None,
        when_busy: WhenBusy = "wait",
        encoding: Encoding = "raw",
        reconnect_timeout_s: float = 30.0,
    ) -> LiveStream:
        """Stream frames (2-D uint8/uint16) over the WebSocket; see :mod:`clients.live`.

        ``fps`` paces the sending at a camera's rate (None: as the source and credits allow);
        ``when_busy`` says what a frame that finds ``max_in_flight`` frames unanswered does.
        """
        query = _query(model=model, mask="rle" if mask else None, threshold=threshold)
        url = f"{self._ws_base()}{_stream_path(stream_id, '/ws')}{query}"
        return LiveStream(
            lambda: self._open_socket(url),
            lambda: self.stream_info(stream_id),
            frames,
            max_in_flight=max_in_flight,
            fps=fps,
            when_busy=when_busy,
            encoding=encoding,
            reconnect_timeout_s=reconnect_timeout_s,
        )

    async def watch(
        self, stream_id: str, *, preview_width: int = 480
    ) -> AsyncIterator[WatchedResult]:
        """Follow a stream someone else sends (read-only): its results with a JPEG preview.

        A slow watcher misses results (``watch_dropped`` counts them); the stream never waits.
        Drops and errors of the watched stream are skipped here.
        """
        query = _query(preview_width=preview_width)
        url = f"{self._ws_base()}{_stream_path(stream_id, '/watch')}{query}"
        async with await self._open_socket(url) as socket:
            async for raw in socket:
                message = json.loads(raw)
                if message.get("type") == "result":
                    yield WatchedResult.model_validate(message)

    def _ws_base(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    async def _open_socket(self, url: str) -> ClientConnection:
        return await websockets.connect(
            url,
            additional_headers=_auth(self.api_key),
            max_size=None,
            compression=None,  # raw pixels: deflate costs both ends more CPU than it saves here
            open_timeout=self.timeout_s,
        )


class Client(_Endpoint):
    """The same service calls, blocking. Streams run on a private event loop thread."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout_s: float = 60.0
    ) -> None:
        super().__init__(base_url, api_key=api_key, timeout_s=timeout_s)
        self._http = httpx.Client(**self._http_options())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ready(self) -> bool:
        return self._call(_Call.ready())

    def models(self) -> list[ModelInfo]:
        return self._call(_Call.models())

    def detect(
        self,
        image: Image,
        *,
        model: str | None = None,
        mask: bool = False,
        threshold: float | None = None,
    ) -> Result:
        return self._call(_Call.detect(image, model, mask, threshold))

    def send_frame(
        self,
        stream_id: str,
        image: Image,
        *,
        model: str | None = None,
        seq: int | None = None,
        timestamp: float | None = None,
        mask: bool = False,
        threshold: float | None = None,
    ) -> Result:
        return self._call(
            _Call.send_frame(stream_id, image, model, seq, timestamp, mask, threshold)
        )

    def streams(self) -> list[StreamInfo]:
        return self._call(_Call.streams())

    def stream_info(self, stream_id: str) -> StreamInfo | None:
        return self._call(_Call.stream_info(stream_id))

    def delete_stream(self, stream_id: str) -> None:
        self._call(_Call.delete_stream(stream_id))

    def set_stream_options(
        self, stream_id: str, options: DetectionOptions, *, model: str | None = None
    ) -> DetectionOptions:
        return self._call(_Call.set_stream_options(stream_id, options, model))

    def stream_options(self, stream_id: str) -> DetectionOptions | None:
        return self._call(_Call.stream_options(stream_id))

    def clear_stream_options(self, stream_id: str) -> None:
        self._call(_Call.clear_stream_options(stream_id))

    def _call(self, call: _Call[Answer]) -> Answer:
        return call.parse(self._http.request(call.method, call.path, **call.request))

    def stream(
        self, stream_id: str, frames: Iterable[np.ndarray], **options: Any
    ) -> BlockingStream[StreamEvent]:
        """``AsyncClient.stream`` (same options), as a blocking iterator with ``stats``."""

        def live(client: AsyncClient) -> LiveStream:
            return client.stream(stream_id, frames, **options)

        return BlockingStream(self._async_twin, live)

    def watch(self, stream_id: str, *, preview_width: int = 480) -> BlockingStream[WatchedResult]:
        return BlockingStream(
            self._async_twin, lambda client: client.watch(stream_id, preview_width=preview_width)
        )

    def _async_twin(self) -> AsyncClient:
        return AsyncClient(self.base_url, api_key=self.api_key, timeout_s=self.timeout_s)


class BlockingStream(Iterable[Item]):
    """An async iterator of ``AsyncClient``, iterated from blocking code.

    The async side runs on its own thread and event loop and hands items over through a small
    queue (so it never runs far ahead of the caller); leaving the loop early stops it.
    """

    HANDOVER_DEPTH = 4

    def __init__(
        self,
        make_client: Callable[[], AsyncClient],
        make_iterator: Callable[[AsyncClient], AsyncIterable[Item]],
    ) -> None:
        self._make_client = make_client
        self._make_iterator = make_iterator
        self.stats: StreamStats | None = None  # a LiveStream's, once it started

    def __iter__(self) -> Iterator[Item]:
        handover: queue.Queue[tuple[Literal["item", "error", "end"], Any]] = queue.Queue(
            self.HANDOVER_DEPTH
        )
        stop = threading.Event()
        running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []

        def put(kind: Literal["item", "error", "end"], value: Any = None) -> None:
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    handover.put((kind, value), timeout=0.1)
                    return

        async def pump() -> None:
            task = asyncio.current_task()
            assert task is not None
            running.append((asyncio.get_running_loop(), task))
            async with self._make_client() as client:
                iterable = self._make_iterator(client)
                if isinstance(iterable, LiveStream):
                    self.stats = iterable.stats
                items = aiter(iterable)
                try:
                    async for item in items:
                        await asyncio.to_thread(put, "item", item)
                    put("end")
                except Exception as exc:
                    put("error", exc)
                finally:
                    close = getattr(items, "aclose", None)  # stop its tasks, close its socket
                    if close is not None:
                        await close()

        def run() -> None:
            with asyncio.Runner() as runner, contextlib.suppress(asyncio.CancelledError):
                runner.run(pump())

        thread = threading.Thread(target=run, name="irtrack-stream", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = handover.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            stop.set()
            for loop, task in running:
                with contextlib.suppress(RuntimeError):  # the loop closed in between
                    loop.call_soon_threadsafe(task.cancel)
            thread.join()


def _auth(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


def _stream_path(stream_id: str, tail: str = "") -> str:
    """A stream's URL path: the id is escaped whole (a ``/`` in it must not start a new segment)."""
    return f"/v1/streams/{quote(stream_id, safe='')}{tail}"


def _query(**params: str | float | None) -> str:
    present = {key: value for key, value in params.items() if value is not None}
    return "?" + str(httpx.QueryParams(present)) if present else ""


def _frame_request(
    image: Image,
    model: str | None = None,
    mask: bool = False,
    seq: int | None = None,
    timestamp: float | None = None,
    threshold: float | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Query parameters and body of a frame: arrays go raw (no encoding), files as they are."""
    params: dict[str, Any] = {
        "model": model,
        "seq": seq,
        "timestamp": timestamp,
        "threshold": threshold,
    }
    params["mask"] = "rle" if mask else None
    if isinstance(image, Path):
        content = image.read_bytes()
    elif isinstance(image, bytes):
        content = image
    else:
        if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"frames must be 2-D uint8 or uint16, got {image.shape} {image.dtype}")
        params.update(width=image.shape[1], height=image.shape[0], dtype=str(image.dtype))
        content = raw_bytes(image)
    return {key: value for key, value in params.items() if value is not None}, content


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:200]
    retry_after = response.headers.get("retry-after")
    retry_after_s = float(retry_after) if retry_after and retry_after.isdigit() else None
    raise IrtrackError(response.status_code, code, message, retry_after_s)


def _parse(response: httpx.Response, model: type[Model]) -> Model:
    _raise_for_error(response)
    return model.model_validate_json(response.content)
