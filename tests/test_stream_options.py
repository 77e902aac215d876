"""A stream's detection options through the API: ignore regions, confirmed-only reports and
thresholds, over REST, the WebSocket and, in Redis mode, across processes; bad options refused."""

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from scale_out_support import RedisServer, ServiceProcess
from service_support import receive_json, running_server, send_frame

from clients import Client, DetectionOptions, IgnoreRegion
from service.codecs import decode_rle
from service.settings import Settings

pytestmark = pytest.mark.timeout(300)

DOTS = ((20, 20), (100, 20), (20, 70), (100, 70))  # (x, y) of four hot 3 x 3 targets
CAPTION = {"rect": [0, 0, 127, 30]}  # covers the two top dots, as a burned-in caption would


def dotted_frame() -> np.ndarray:
    rows, columns = np.mgrid[0:96, 0:128]
    frame = 60 + 0.2 * columns + 0.1 * rows
    for x, y in DOTS:
        frame[y - 1 : y + 2, x - 1 : x + 2] = 255
    return frame.astype(np.uint8)


def raw(frame: np.ndarray) -> dict[str, object]:
    return {
        "content": frame.tobytes(),
        "params": {"width": frame.shape[1], "height": frame.shape[0]},
    }


def centroids(result: dict) -> list[tuple[int, int]]:
    return sorted((round(t["centroid"]["x"]), round(t["centroid"]["y"])) for t in result["targets"])


@pytest.fixture(scope="module")
def server():
    with running_server(models=["sd2net"], warmup_sizes=["128x96"]) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def post_frame(http: httpx.Client, stream: str, **params: object) -> dict:
    frame = dotted_frame()
    response = http.post(
        f"/v1/streams/{stream}/frames",
        content=frame.tobytes(),
        params={"width": 128, "height": 96, **params},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_detections_in_an_ignore_region_are_dropped_from_the_next_frame_on(http):
    before = post_frame(http, "cam-caption")
    assert centroids(before) == sorted(DOTS)
    options = {"width": 128, "height": 96, "ignore": [CAPTION]}
    response = http.put("/v1/streams/cam-caption/options", json=options)
    assert response.status_code == 200, response.text
    after = post_frame(http, "cam-caption")
    assert centroids(after) == [(20, 70), (100, 70)]
    assert http.get("/v1/streams/cam-caption").json()["options"]["ignore"] == [
        {"rect": [0.0, 0.0, 127.0, 30.0], "polygon": None}
    ]
    assert http.delete("/v1/streams/cam-caption/options").status_code == 204
    assert centroids(post_frame(http, "cam-caption")) == sorted(DOTS)
    assert http.get("/v1/streams/cam-caption/options").status_code == 404


def test_confirmed_only_reports_a_target_from_its_third_frame(http):
    options = {"width": 128, "height": 96, "report": "confirmed"}
    assert http.put("/v1/streams/cam-confirmed/options", json=options).status_code == 200
    reported = [len(post_frame(http, "cam-confirmed")["targets"]) for _ in range(4)]
    assert reported == [0, 0, 4, 4]  # tracks are confirmed on their third detection
    last = post_frame(http, "cam-confirmed")
    assert all(target["track_id"] is not None for target in last["targets"])


def test_a_requests_threshold_overrides_the_streams_and_the_services(http):
    areas = {}
    for threshold in (0.01, 0.999):
        result = post_frame(http, f"cam-{threshold}", threshold=threshold, mask="rle")
        areas[threshold] = int(decode_rle(result["mask"]).sum())
    assert areas[0.01] > areas[0.999] > 0
    options = {"width": 128, "height": 96, "threshold": 0.999}
    http.put("/v1/streams/cam-0.01/options", json=options)
    stream_threshold = post_frame(http, "cam-0.01", mask="rle")
    assert int(decode_rle(stream_threshold["mask"]).sum()) == areas[0.999]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"width": 128, "height": 96, "ignore": [{"rect": [0, 0, 200, 30]}]}, "outside"),
        (
            {"width": 128, "height": 96, "ignore": [{"polygon": [[1, 1]] * 65}]},
            "3 to 64 vertices",
        ),
        ({"width": 128, "height": 96, "threshold": 1.5}, "threshold"),
        ({"width": 128, "height": 96, "report": "some"}, "report"),
        ({"ignore": []}, "width"),
    ],
)
def test_bad_options_are_a_clear_422(http, options, message):
    response = http.put("/v1/streams/cam-bad/options", json=options)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter" and message in error["message"]


def test_a_frame_of_another_size_than_the_options_is_refused_and_the_stream_goes_on(http):
    http.put("/v1/streams/cam-size/options", json={"width": 128, "height": 96})
    wrong = np.zeros((64, 64), np.uint8)
    response = http.post("/v1/streams/cam-size/frames", **raw(wrong))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "options_size_mismatch"
    assert centroids(post_frame(http, "cam-size")) == sorted(DOTS)
    assert http.post("/v1/detect", params={"threshold": 0}, content=b"x").status_code == 422


async def websocket_answers(url: str, frames: int) -> list[dict]:
    async with websockets.connect(url) as socket:
        answers = []
        for _ in range(frames):
            await send_frame(socket, dotted_frame())
            answers.append(await receive_json(socket))
        return answers


def test_options_and_the_connections_threshold_apply_over_the_websocket(http):
    http.put(
        "/v1/streams/cam-ws/options",
        json={"width": 128, "height": 96, "ignore": [CAPTION], "report": "confirmed"},
    )
    ws_url = str(http.base_url).replace("http", "ws", 1)
    answers = asyncio.run(websocket_answers(f"{ws_url}/v1/streams/cam-ws/ws", 3))
    assert [centroids(a) for a in answers] == [[], [], [(20, 70), (100, 70)]]

    async def refused() -> int:
        with pytest.raises(websockets.InvalidStatus) as refusal:
            async with websockets.connect(f"{ws_url}/v1/streams/cam-ws2/ws?threshold=2"):
                pass
        return refusal.value.response.status_code

    assert asyncio.run(refused()) == 422


def test_the_client_sdk_sets_reads_and_clears_a_streams_options(server):
    options = DetectionOptions(
        width=128, height=96, ignore=(IgnoreRegion(**CAPTION),), threshold=0.8, report="all"
    )
    with Client(server.base_url) as client:
        assert client.stream_options("cam-sdk") is None
        assert client.set_stream_options("cam-sdk", options) == options
        assert client.stream_options("cam-sdk") == options
        result = client.send_frame("cam-sdk", dotted_frame())
        assert centroids(result.model_dump()) == [(20, 70), (100, 70)]
        client.clear_stream_options("cam-sdk")
        assert client.stream_options("cam-sdk") is None
        assert len(client.detect(dotted_frame(), threshold=0.5).targets) == 4


def test_options_travel_with_the_frames_to_a_redis_worker(tmp_path: Path):
    redis = RedisServer(tmp_path)
    redis.start()
    env = {
        "IRTRACK_REDIS_URL": redis.url,
        "IRTRACK_MODELS": "sd2net",
        "IRTRACK_WARMUP_SIZES": "128x96",
        "IRTRACK_TORCH_THREADS": "1",
    }
    api = ServiceProcess("serve", env, tmp_path / "api.log")
    worker = ServiceProcess("worker", env, tmp_path / "worker.log")
    try:
        api.wait_ready()
        with httpx.Client(base_url=api.base_url, timeout=60) as client:
            options = {"width": 128, "height": 96, "ignore": [CAPTION], "threshold": 0.9}
            assert client.put("/v1/streams/far/options", json=options).status_code == 200
            assert centroids(post_frame(client, "far")) == [(20, 70), (100, 70)]
            info = client.get("/v1/streams/far")  # its tracks came back over Redis too
            assert info.status_code == 200, info.text
            assert info.json()["options"]["threshold"] == 0.9
    finally:
        api.stop()
        worker.stop()
        redis.kill()


def test_a_stream_that_names_no_model_gets_the_configured_stream_model():
    with (
        running_server(models=["sd2net", "std2net"], stream_model="std2net") as server,
        httpx.Client(base_url=server.base_url, timeout=60) as client,
    ):
        result = post_frame(client, "cam-default")
        assert result["model"] == "std2net"
        listing = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert listing["std2net"]["stream_default"] and listing["sd2net"]["default"]
        detect = client.post("/v1/detect", **raw(dotted_frame()))
        assert detect.json()["model"] == "sd2net"  # single frames keep the default model


def test_a_stream_model_that_is_not_loaded_is_refused_at_start_up():
    with pytest.raises(ValueError, match="stream_model 'std2net' is not among the loaded"):
        Settings(models=["sd2net"], stream_model="std2net")
