"""The REST and WebSocket API against a real uvicorn server on a free port (httpx, websockets)."""

import asyncio
import json

import httpx
import numpy as np
import pytest
import torch
import websockets
from service_support import (
    assert_frames_accounted,
    exchange,
    metric_value,
    noise_frame,
    png,
    receive_json,
    running_server,
    send_frame,
)

from frames.postprocess import find_components, sigmoid
from models.padding import run_padded
from models.registry import load_model
from service.codecs import decode_rle

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server():
    with running_server(
        models=["sd2net", "std2net"],
        max_wait_ms=20.0,
        max_body_bytes=1 << 20,
        max_frame_pixels=256 * 256,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def local_sd2net_probabilities(frame: np.ndarray) -> np.ndarray:
    """What the model computes on its own: the service's random-init weights use seed 0."""
    torch.manual_seed(0)
    model, _ = load_model("sd2net")
    with torch.inference_mode():
        logits = run_padded(model, torch.from_numpy(frame / np.float32(255))[None, None])
    return sigmoid(logits[0, 0].numpy())


def test_models_lists_the_loaded_detectors(http):
    models = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
    assert set(models) == {"sd2net", "std2net"}
    assert models["sd2net"]["parameters"] == 262_442 and models["sd2net"]["default"]
    assert models["std2net"]["frames"] == 5 and not models["std2net"]["default"]
    # on a CPU, a stream that names no model gets SD2Net too (STD2Net is the default on a GPU)
    assert {m["device"] for m in models.values()} == {"cpu"}
    assert models["sd2net"]["stream_default"] and not models["std2net"]["stream_default"]
    assert all(len(m["weights_sha256"]) == 64 for m in models.values())
    # on a CPU in float32 the single-frame model runs on ONNX Runtime; streaming stays in torch
    assert models["sd2net"]["backend"] == "onnxruntime" and models["std2net"]["backend"] == "torch"


def test_the_openapi_document_lists_every_endpoint(http):
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/readyz", "/metrics", "/v1/models", "/v1/detect"} <= set(paths)
    assert set(paths["/v1/streams/{stream_id}"]) == {"get", "delete"}
    assert "post" in paths["/v1/streams/{stream_id}/frames"]


def test_detect_answers_what_the_model_computes(http):
    frame = noise_frame(50, 70, seed=1)  # not a multiple of 16: padded and cropped back
    response = http.post("/v1/detect", content=png(frame), params={"mask": "rle"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "result" and result["stream_id"] is None and result["seq"] is None
    assert (result["model"], result["width"], result["height"]) == ("sd2net", 70, 50)
    assert set(result["latency_ms"]) == {"queue", "inference", "postprocess", "total"}
    prob = local_sd2net_probabilities(frame)
    np.testing.assert_array_equal(decode_rle(result["mask"]), prob > 0.5)
    expected = find_components(prob, 0.5)
    assert [t["area"] for t in result["targets"]] == [c.area for c in expected]
    for target, component in zip(result["targets"], expected, strict=True):
        assert target["centroid"]["x"] == pytest.approx(component.centroid_x)
        assert target["bbox"] == {
            "x0": component.x0,
            "y0": component.y0,
            "x1": component.x1,
            "y1": component.y1,
        }
        assert target["score"] == pytest.approx(component.score, abs=1e-5)
        assert target["track_id"] is None  # stateless: no tracker


def test_sixteen_bit_and_raw_frames_are_accepted(http):
    frame16 = noise_frame(48, 64, seed=2, dtype=np.uint16)
    for content, params in [
        (png(frame16), {}),
        (frame16.astype("<u2").tobytes(), {"width": 64, "height": 48, "dtype": "uint16"}),
        (noise_frame(48, 64, seed=3).tobytes(), {"width": 64, "height": 48}),
    ]:
        response = http.post("/v1/detect", content=content, params=params)
        assert response.status_code == 200, response.text
        assert (response.json()["width"], response.json()["height"]) == (64, 48)


def test_three_channel_frames_are_read_as_gray(http):
    gray = noise_frame(64, 64, seed=4)
    as_gray = http.post("/v1/detect", content=png(gray), params={"mask": "rle"}).json()
    as_colour = http.post(
        "/v1/detect", content=png(np.dstack([gray] * 3)), params={"mask": "rle"}
    ).json()
    assert as_colour["mask"] == as_gray["mask"] and as_colour["targets"] == as_gray["targets"]


def test_a_stream_over_rest_keeps_its_sequence_and_counters(http):
    seqs = [
        http.post("/v1/streams/rest-1/frames", content=png(noise_frame(64, 64, seed=s))).json()[
            "seq"
        ]
        for s in range(3)
    ]
    assert seqs == [0, 1, 2]
    explicit = http.post(
        "/v1/streams/rest-1/frames", content=png(noise_frame(64, 64, 9)), params={"seq": 10}
    )
    assert explicit.json()["seq"] == 10 and explicit.json()["stream_id"] == "rest-1"
    backwards = http.post(
        "/v1/streams/rest-1/frames", content=png(noise_frame(64, 64, 9)), params={"seq": 5}
    )
    assert (
        backwards.status_code == 400 and backwards.json()["error"]["code"] == "seq_not_increasing"
    )
    other_model = http.post(
        "/v1/streams/rest-1/frames",
        content=png(noise_frame(64, 64, 9)),
        params={"model": "std2net"},
    )
    assert (
        other_model.status_code == 409 and other_model.json()["error"]["code"] == "model_mismatch"
    )

    info = http.get("/v1/streams/rest-1").json()
    assert (info["model"], info["width"], info["height"], info["last_seq"]) == (
        "sd2net",
        64,
        64,
        10,
    )
    assert info["frames"] == {"received": 6, "processed": 4, "dropped": 0, "failed": 2}
    assert "rest-1" in [s["stream_id"] for s in http.get("/v1/streams").json()["streams"]]

    assert http.delete("/v1/streams/rest-1").status_code == 204
    assert http.get("/v1/streams/rest-1").status_code == 404
    again = http.delete("/v1/streams/rest-1")
    assert again.status_code == 404 and again.json()["error"]["code"] == "unknown_stream"


def test_a_websocket_stream_answers_every_frame_in_order(server):
    frames = [noise_frame(64, 64, seed=s) for s in range(8)]
    frames[3] = png(frames[3])  # an encoded image between raw ones
    answers = asyncio.run(exchange(f"{server.ws_url}/v1/streams/ws-1/ws", frames, window=2))
    assert [a["type"] for a in answers] == ["result"] * 8
    assert [a["seq"] for a in answers] == list(range(8))
    assert {a["stream_id"] for a in answers} == {"ws-1"}


def test_four_streams_at_once_each_get_only_their_own_results(server):
    sizes = {"cam-a": (64, 64), "cam-b": (48, 64), "cam-c": (64, 80), "cam-d": (64, 64)}
    batches_before = metric_value(server.base_url, 'irtrack_batch_size_count{model="std2net"}')
    frames_before = metric_value(server.base_url, 'irtrack_batch_size_sum{model="std2net"}')

    async def run_all():
        return await asyncio.gather(
            *[
                exchange(
                    f"{server.ws_url}/v1/streams/{name}/ws?model=std2net",
                    [noise_frame(h, w, seed=i) for i in range(6)],
                    window=2,
                )
                for name, (h, w) in sizes.items()
            ]
        )

    for (name, (height, width)), answers in zip(sizes.items(), asyncio.run(run_all()), strict=True):
        assert [a["type"] for a in answers] == ["result"] * 6
        assert {a["stream_id"] for a in answers} == {name}
        assert [a["seq"] for a in answers] == list(range(6))
        assert {(a["height"], a["width"]) for a in answers} == {(height, width)}
    batches = metric_value(server.base_url, 'irtrack_batch_size_count{model="std2net"}')
    frames = metric_value(server.base_url, 'irtrack_batch_size_sum{model="std2net"}')
    assert frames - frames_before == 24
    assert batches - batches_before < 24, "frames of different streams were never batched"


def test_a_frame_of_another_size_restarts_the_stream(server):
    frames = [noise_frame(64, 64, s) for s in range(3)] + [noise_frame(64, 96, 3)] * 2
    url = f"{server.ws_url}/v1/streams/resize/ws?model=std2net"
    answers = asyncio.run(exchange(url, frames))
    assert [a["reset"] for a in answers] == [False, False, False, True, False]
    assert [a["width"] for a in answers] == [64, 64, 64, 96, 96]


BAD_REQUESTS = [
    ("empty body", "/v1/detect", b"", {}, 400, "empty_body"),
    ("truncated png", "/v1/detect", png(noise_frame(64, 64, 0))[:200], {}, 400, "undecodable"),
    ("not an image", "/v1/detect", b"GIF89a....", {}, 415, "unsupported_format"),
    (
        "raw byte count",
        "/v1/detect",
        b"\0" * 100,
        {"width": 8, "height": 8},
        400,
        "raw_size_mismatch",
    ),
    ("raw without height", "/v1/detect", b"\0" * 64, {"width": 8}, 422, "invalid_parameter"),
    (
        "absurd dimensions",
        "/v1/detect",
        b"\0" * 64,
        {"width": 10**6, "height": 10**6},
        413,
        "frame_too_large",
    ),
    ("zero width", "/v1/detect", b"\0" * 64, {"width": 0, "height": 8}, 422, "invalid_parameter"),
    (
        "NaN timestamp",
        "/v1/detect",
        png(noise_frame(64, 64, 0)),
        {"timestamp": "nan"},
        422,
        "invalid_parameter",
    ),
    (
        "infinite timestamp",
        "/v1/streams/survivor/frames",
        png(noise_frame(64, 64, 0)),
        {"timestamp": "1e999"},
        422,
        "invalid_parameter",
    ),
    (
        "seq beyond 2**53",
        "/v1/streams/survivor/frames",
        png(noise_frame(64, 64, 0)),
        {"seq": str(10**29)},
        422,
        "invalid_parameter",
    ),
    (
        "oversized body",
        "/v1/detect",
        b"\0" * (2 << 20),
        {"width": 1024, "height": 2048},
        413,
        "body_too_large",
    ),
    (
        "unknown model",
        "/v1/detect",
        png(noise_frame(64, 64, 0)),
        {"model": "yolo"},
        404,
        "unknown_model",
    ),
    (
        "stream model on detect",
        "/v1/detect",
        png(noise_frame(64, 64, 0)),
        {"model": "std2net"},
        422,
        "model_needs_stream",
    ),
    (
        "bad mask option",
        "/v1/detect",
        png(noise_frame(64, 64, 0)),
        {"mask": "png"},
        422,
        "invalid_parameter",
    ),
    (
        "bad stream id",
        "/v1/streams/a%20b/frames",
        png(noise_frame(64, 64, 0)),
        {},
        422,
        "invalid_parameter",
    ),
]


@pytest.mark.parametrize(
    ("path", "content", "params", "status", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_gets_its_status_and_the_service_keeps_serving(
    server, http, path, content, params, status, code
):
    response = http.post(path, content=content, params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    survivor = http.post("/v1/streams/survivor/frames", content=png(noise_frame(64, 64, 5)))
    assert survivor.status_code == 200


def test_unknown_routes_and_streams_answer_with_the_error_model(http):
    for response, status in [
        (http.get("/v1/nothing-here"), 404),
        (http.delete("/v1/streams/never-seen"), 404),
        (http.get("/v1/streams/never-seen"), 404),
        (http.put("/v1/detect"), 405),
    ]:
        assert response.status_code == status
        assert set(response.json()["error"]) == {"code", "message"}


def test_bad_websocket_frames_are_answered_and_the_stream_goes_on(server):
    frames = [
        noise_frame(64, 64, 0),
        b"garbage that is no image",
        png(noise_frame(64, 64, 1))[:100],
        noise_frame(64, 64, 2),
    ]

    async def run():
        url = f"{server.ws_url}/v1/streams/ws-bad/ws"
        async with websockets.connect(url) as socket:
            answers = []
            for frame in frames:
                await send_frame(socket, frame)
                answers.append(await receive_json(socket))
            await socket.send(json.dumps({"width": -3}))  # a header that is not valid
            answers.append(await receive_json(socket))
            await socket.send(json.dumps({"width": 8, "height": 8}))
            await socket.send(b"\0" * 63)  # one byte short
            answers.append(await receive_json(socket))
            await send_frame(socket, noise_frame(64, 64, 3))
            answers.append(await receive_json(socket))
            return answers

    answers = asyncio.run(run())
    assert [a["type"] for a in answers] == [
        "result",
        "error",
        "error",
        "result",
        "error",
        "error",
        "result",
    ]
    assert [a["error"]["code"] for a in answers if a["type"] == "error"] == [
        "unsupported_format",
        "undecodable",
        "invalid_parameter",
        "raw_size_mismatch",
    ]
    assert [a["seq"] for a in answers if a["type"] == "result"] == [0, 1, 2]


def strict_json(text: str) -> dict:
    """JSON as the standard defines it: NaN and Infinity are not numbers there."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    answer: dict = json.loads(text, parse_constant=refuse)
    return answer


def test_websocket_headers_with_a_timestamp_or_seq_out_of_range_are_refused(server):
    """Non-finite timestamps (1e999 parses as infinity) and seq beyond 2**53 are that frame's
    error; every message out is standard JSON, and the stream goes on."""
    headers = [
        '{"timestamp": 1e999}',
        '{"timestamp": NaN}',
        '{"timestamp": -Infinity}',
        '{"seq": 100000000000000000000000000000}',
    ]

    async def run():
        async with websockets.connect(f"{server.ws_url}/v1/streams/ws-ranges/ws") as socket:
            answers = []
            for header in headers:
                await socket.send(header)
                await socket.send(png(noise_frame(64, 64, 0)))
                for _ in range(2):  # the header's error, then the frame's answer
                    answers.append(strict_json(await socket.recv()))
            return answers

    answers = asyncio.run(run())
    refusals = answers[0::2]
    assert [a["type"] for a in refusals] == ["error"] * len(headers)
    assert {a["error"]["code"] for a in refusals} == {"invalid_parameter"}
    frames = answers[1::2]  # sent without a valid header: the stream's next seq, now as time
    assert [a["type"] for a in frames] == ["result"] * len(headers)
    assert [a["seq"] for a in frames] == [0, 1, 2, 3]


def test_websocket_handshake_refusals_carry_status_and_json(server):
    async def refused(url):
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            async with websockets.connect(url):
                pass
        response = caught.value.response
        return response.status_code, json.loads(response.body)["error"]["code"]

    async def second_connection():
        url = f"{server.ws_url}/v1/streams/busy/ws"
        async with websockets.connect(url) as first:
            await send_frame(first, noise_frame(64, 64, 0))
            await receive_json(first)
            return await refused(url)

    assert asyncio.run(refused(f"{server.ws_url}/v1/streams/x/ws?model=yolo")) == (
        404,
        "unknown_model",
    )
    assert asyncio.run(second_connection()) == (409, "stream_in_use")
    # invalid parameters: 422 like REST, not the 403 of an unanswered handshake
    for query in ("ws?mask=xyz", "watch?preview_width=-1", "watch?preview_width=big"):
        assert asyncio.run(refused(f"{server.ws_url}/v1/streams/x/{query}")) == (
            422,
            "invalid_parameter",
        ), query


def test_delete_closes_the_live_websocket(server, http):
    async def run():
        async with websockets.connect(f"{server.ws_url}/v1/streams/doomed/ws") as socket:
            await send_frame(socket, noise_frame(64, 64, 0))
            await receive_json(socket)
            deleted = await asyncio.to_thread(http.delete, "/v1/streams/doomed")
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await receive_json(socket)
            return deleted.status_code, closed.value.rcvd.code

    assert asyncio.run(run()) == (204, 4410)
    assert http.get("/v1/streams/doomed").status_code == 404


def test_metrics_follow_the_contract(server, http):
    text = http.get("/metrics").text
    for name in [
        "irtrack_frames_received_total",
        "irtrack_frames_processed_total",
        'irtrack_frames_failed_total{reason="empty_body"}',
        'irtrack_frame_latency_seconds_bucket{le="0.001",stage="queue"}',
        'irtrack_frame_latency_seconds_count{stage="total"}',
        'irtrack_batch_size_count{model="sd2net"}',
        'irtrack_queue_depth{stage="engine"}',
        "irtrack_active_streams",
        "irtrack_targets_per_frame_count",
        "irtrack_active_tracks",
        "irtrack_gpu_memory_allocated_bytes",
        "irtrack_model_info{",
        "irtrack_ready 1.0",
    ]:
        assert name in text, name
    assert "stream_id" not in text and "cam-a" not in text  # no per-stream labels
    assert_frames_accounted(server.base_url)
