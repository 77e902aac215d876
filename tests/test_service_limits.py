"""Limits and lifecycle of a real server: API keys, overload, failures, readiness, shutdown."""

import asyncio
import contextlib
import logging
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import websockets
from scale_out_support import wait_for
from service_support import (
    assert_frames_accounted,
    exchange,
    metric_value,
    noise_frame,
    png,
    receive_json,
    running_server,
    send_frame,
    wait_until_ready,
)

pytestmark = pytest.mark.timeout(300)

INFERENCE_DELAY_S = 0.15


def marked(frame: np.ndarray) -> np.ndarray:
    """A frame the slowed model below refuses: its first row is all white."""
    frame = frame.copy()
    frame[0, :] = 255
    return frame


def slow_and_fallible(app) -> None:
    """Make the model slower than the clients (so queues fill) and fail on marked frames."""
    runtime = app.state.engine.worker.runtime
    submit = runtime.submit

    def slowed(model, frames, states=None):
        time.sleep(INFERENCE_DELAY_S)
        if any(np.all(frame[0, :] == 1.0) for frame in frames):
            raise RuntimeError("injected model failure")
        return submit(model, frames, states)

    runtime.submit = slowed


# --- API keys --------------------------------------------------------------------------------
def test_api_keys_guard_the_api_but_not_the_probes():
    with running_server(api_keys=["key-1", "key-2"]) as server:
        url = server.base_url
        body = png(noise_frame(64, 64, 0))
        missing = httpx.post(f"{url}/v1/detect", content=body)
        wrong = httpx.post(f"{url}/v1/detect", content=body, headers={"X-API-Key": "nope"})
        right = httpx.post(f"{url}/v1/detect", content=body, headers={"X-API-Key": "key-2"})
        assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "forbidden")
        assert right.status_code == 200
        # two keys (one valid): refused, never "the first one wins"
        for keys in (["key-2", "nope"], ["nope", "key-2"], ["key-1", "key-1"]):
            twice = httpx.post(
                f"{url}/v1/detect", content=body, headers=[("X-API-Key", k) for k in keys]
            )
            assert (twice.status_code, twice.json()["error"]["code"]) == (
                401,
                "duplicate_api_key",
            ), keys
        assert httpx.get(f"{url}/v1/streams").status_code == 401
        assert httpx.delete(f"{url}/v1/streams/x").status_code == 401
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(f"{url}{probe}").status_code == 200

        async def websocket(headers):
            ws_url = f"{server.ws_url}/v1/streams/secure/ws"
            try:
                return await exchange(ws_url, [noise_frame(64, 64, 0)], headers=headers)
            except websockets.exceptions.InvalidStatus as refused:
                return refused.response.status_code

        assert asyncio.run(websocket(None)) == 401
        assert asyncio.run(websocket({"X-API-Key": "wrong"})) == 403
        assert asyncio.run(websocket([("X-API-Key", "key-1"), ("X-API-Key", "x")])) == 401
        assert asyncio.run(websocket({"X-API-Key": "key-1"}))[0]["type"] == "result"


def test_refused_handshakes_are_answered_without_an_error_in_the_log():
    """Every refused WebSocket handshake (bad key, bad parameter, unknown model) is an ordinary
    answer: an access-log line, never an ERROR (they page people) or a traceback."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "service", "fastapi")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with running_server(api_keys=["key-1"]) as server:

            async def refused(path, headers):
                with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
                    async with websockets.connect(
                        f"{server.ws_url}{path}", additional_headers=headers
                    ):
                        pass
                return caught.value.response.status_code

            key = {"X-API-Key": "key-1"}
            statuses = [
                asyncio.run(refused("/v1/streams/a/ws", {"X-API-Key": "wrong"})),
                asyncio.run(refused("/v1/streams/a/ws?mask=xyz", key)),
                asyncio.run(refused("/v1/streams/a/watch?preview_width=-1", key)),
                asyncio.run(refused("/v1/streams/a/ws?model=yolo", key)),
            ]
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert statuses == [403, 422, 422, 404]
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []


# --- overload and failures -------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_server():
    with running_server(
        before_start=slow_and_fallible, stream_queue_depth=1, global_queue_limit=3
    ) as server:
        yield server


def test_a_flooded_websocket_drops_the_oldest_waiting_frames_and_says_so(slow_server):
    frames = [noise_frame(64, 64, seed=s) for s in range(12)]
    depths: list[float] = []
    flooding = threading.Event()

    def watch_queue_depth():
        while not flooding.is_set():
            depths.append(
                metric_value(slow_server.base_url, 'irtrack_queue_depth{stage="stream_buffer"}')
                + metric_value(slow_server.base_url, 'irtrack_queue_depth{stage="engine"}')
            )
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_queue_depth)
    watcher.start()
    try:
        url = f"{slow_server.ws_url}/v1/streams/flood/ws"
        answers = asyncio.run(exchange(url, frames, window=len(frames)))
    finally:
        flooding.set()
        watcher.join()
    assert [a["seq"] for a in answers] == list(range(12))  # every frame answered, in order
    kinds = [a["type"] for a in answers]
    assert kinds[0] == "result" and kinds[-1] == "result"  # the newest frame always wins
    dropped = [a for a in answers if a["type"] == "dropped"]
    assert dropped and {a["reason"] for a in dropped} == {"newest_wins"}
    assert kinds.count("result") + len(dropped) == 12
    assert max(depths) <= 3  # never more than global_queue_limit frames held


def test_flooded_rest_callers_get_429_with_retry_after(slow_server):
    async def burst():
        async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=60) as client:
            body = png(noise_frame(64, 64, 1))
            return await asyncio.gather(
                *[client.post("/v1/detect", content=body) for _ in range(8)]
            )

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 1
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"


def test_a_failing_model_call_fails_only_its_frame(slow_server):
    url = f"{slow_server.ws_url}/v1/streams/fragile/ws"
    frames = [noise_frame(64, 64, 0), marked(noise_frame(64, 64, 1)), noise_frame(64, 64, 2)]
    answers = asyncio.run(exchange(url, frames))
    assert [a["type"] for a in answers] == ["result", "error", "result"]
    assert answers[1]["error"]["code"] == "inference_error" and answers[1]["seq"] == 1
    assert answers[2]["reset"]  # the window was in doubt after the failure: restarted

    failed = httpx.post(f"{slow_server.base_url}/v1/detect", content=png(frames[1]))
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "inference_error"
    assert (
        httpx.post(f"{slow_server.base_url}/v1/detect", content=png(frames[0])).status_code == 200
    )


def test_every_frame_of_the_overload_run_is_accounted_for(slow_server):
    totals = assert_frames_accounted(slow_server.base_url)
    assert totals["dropped"] > 0 and totals["failed"] > 0 and totals["processed"] > 0
    newest_wins = metric_value(
        slow_server.base_url, 'irtrack_frames_dropped_total{reason="newest_wins"}'
    )
    overloaded = metric_value(
        slow_server.base_url, 'irtrack_frames_dropped_total{reason="overloaded"}'
    )
    assert newest_wins > 0 and overloaded > 0


# --- readiness and shutdown ------------------------------------------------------------------
def test_readiness_is_503_until_the_models_are_warm():
    warm_up_may_finish = threading.Event()

    def hold_warm_up(app):
        runtime = app.state.engine.worker.runtime
        warm_up = runtime.warm_up

        def held():
            warm_up_may_finish.wait(60)
            warm_up()

        runtime.warm_up = held

    with running_server(wait_ready=False, before_start=hold_warm_up) as server:
        url = server.base_url
        not_ready = httpx.get(f"{url}/readyz")
        assert not_ready.status_code == 503 and not_ready.headers["Retry-After"] == "1"
        assert not_ready.json()["error"]["code"] == "not_ready"
        assert httpx.get(f"{url}/healthz").status_code == 200  # alive while loading
        early = httpx.post(f"{url}/v1/detect", content=png(noise_frame(64, 64, 0)))
        assert (early.status_code, early.json()["error"]["code"]) == (503, "not_ready")

        async def handshake():
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                async with websockets.connect(f"{server.ws_url}/v1/streams/early/ws"):
                    pass
            return refused.value.response.status_code

        assert asyncio.run(handshake()) == 503
        warm_up_may_finish.set()
        wait_until_ready(url, timeout_s=60)
        assert (
            httpx.post(f"{url}/v1/detect", content=png(noise_frame(64, 64, 0))).status_code == 200
        )


def test_shutdown_answers_every_admitted_frame_before_closing():
    frames = [noise_frame(64, 64, seed=s) for s in range(20)]
    answers: list[dict] = []

    async def stream_until_closed(url):
        async with websockets.connect(url) as socket:
            for frame in frames:
                await send_frame(socket, frame)
            try:
                while True:
                    answers.append(await receive_json(socket, timeout_s=30))
            except websockets.exceptions.ConnectionClosed:
                pass

    with running_server(before_start=slow_and_fallible) as server:
        engine = server.app.state.engine
        client = threading.Thread(
            target=asyncio.run,
            args=(stream_until_closed(f"{server.ws_url}/v1/streams/shutdown/ws"),),
        )
        client.start()
        time.sleep(3 * INFERENCE_DELAY_S)  # frames in flight and waiting when the server stops
    client.join(30)
    assert not client.is_alive()
    assert not engine.worker.alive
    samples = {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for metric in engine.metrics.registry.collect()
        for sample in metric.samples
        if sample.name.startswith("irtrack_frames_") and sample.name.endswith("_total")
    }
    received = samples["irtrack_frames_received_total[]"]
    settled = sum(v for k, v in samples.items() if not k.startswith("irtrack_frames_received"))
    assert received == len(frames) and settled == received, samples
    # Graceful: the client got one message per frame, in order, before its socket closed.
    assert [a["seq"] for a in answers] == list(range(len(frames)))


def test_idle_streams_expire_and_the_stream_count_is_bounded():
    with running_server(stream_idle_ttl_s=2.0, max_streams=2) as server:
        url = server.base_url
        body = png(noise_frame(64, 64, 0))
        for stream in ("one", "two"):
            assert httpx.post(f"{url}/v1/streams/{stream}/frames", content=body).status_code == 200
        third = httpx.post(f"{url}/v1/streams/three/frames", content=body)
        assert (third.status_code, third.json()["error"]["code"]) == (429, "too_many_streams")
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/v1/streams").json()["streams"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/streams/one").status_code == 404
        assert httpx.post(f"{url}/v1/streams/three/frames", content=body).status_code == 200


def test_a_crashed_worker_answers_waiting_callers_and_fails_liveness():
    def crash_on_first_batch(app):
        worker = app.state.engine.worker

        def broken(*_):
            raise RuntimeError("a bug in the worker loop")

        worker._run_batch = broken

    with running_server(before_start=crash_on_first_batch) as server:
        response = httpx.post(f"{server.base_url}/v1/detect", content=png(noise_frame(64, 64, 0)))
        assert response.status_code == 503 and response.json()["error"]
        assert httpx.get(f"{server.base_url}/healthz").status_code == 503
        assert httpx.get(f"{server.base_url}/readyz").status_code == 503
        assert_frames_accounted(server.base_url)


# --- slow and vanishing uploads --------------------------------------------------------------
def upload_head(server, announced: int) -> bytes:
    return (
        f"POST /v1/detect?width=256&height=256 HTTP/1.1\r\nHost: {server.settings.host}\r\n"
        f"Content-Length: {announced}\r\n\r\n"
    ).encode()


def answer_of(connection: socket.socket, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection (or ``within_s`` passes)."""
    connection.settimeout(within_s)
    received = b""
    with contextlib.suppress(TimeoutError):
        while chunk := connection.recv(65536):
            received += chunk
    return received


def test_stalled_and_trickling_uploads_are_timed_out_and_closed():
    """An upload that stops (20 such connections held a server's memory forever) or trickles
    gets 408 and its connection closed; the service goes on serving."""
    with running_server(body_idle_timeout_s=0.5, body_timeout_s=2.0) as server:
        stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        for connection in stalled:
            connection.sendall(upload_head(server, 256 * 256) + b"\0" * 30_000)
        trickling = socket.create_connection(("127.0.0.1", server.port))
        trickling.sendall(upload_head(server, 256 * 256))
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            with contextlib.suppress(OSError):  # closed by the server once its time is up
                trickling.sendall(b"\0" * 100)
            time.sleep(0.2)
        for connection in [*stalled, trickling]:
            answer = answer_of(connection, within_s=5.0)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"body_timeout"' in answer
            connection.close()
        assert httpx.post(f"{server.base_url}/v1/detect", content=png(noise_frame(64, 64, 0)))
        assert (
            metric_value(server.base_url, 'irtrack_frames_failed_total{reason="body_timeout"}')
            == 21
        )
        assert_frames_accounted(server.base_url)


def test_a_client_gone_mid_upload_is_no_server_failure():
    """Not a 500, not a traceback, not failed{internal}: dropped{client_gone}."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    for name in ("uvicorn.error", "service"):
        logging.getLogger(name).addHandler(handler)
    try:
        with running_server() as server:
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", server.port)) as connection:
                    connection.sendall(upload_head(server, 256 * 256) + b"\0" * 1000)
                    time.sleep(0.2)
            dropped = 'irtrack_frames_dropped_total{reason="client_gone"} 3.0'
            metrics = f"{server.base_url}/metrics"
            wait_for(lambda: dropped in httpx.get(metrics).text, 5, "three client_gone drops")
            assert 'reason="internal"' not in httpx.get(metrics).text
            assert_frames_accounted(server.base_url)
    finally:
        for name in ("uvicorn.error", "service"):
            logging.getLogger(name).removeHandler(handler)
    assert [r.getMessage() for r in records] == []
