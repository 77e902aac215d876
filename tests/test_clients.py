"""The Python client: typed REST calls and watch against a real server; the live-stream protocol
(credits, skipping, reconnecting, terminal closes) against a scripted WebSocket endpoint."""

import asyncio
import base64
import itertools
import json
import time

import cv2
import httpx
import numpy as np
import pytest
import websockets
from service_support import noise_frame, png, running_server
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus

from clients import AsyncClient, Client, FrameEvent, IrtrackError, Reconnected, StreamFailed
from service.schemas import Result

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server():
    with running_server(max_wait_ms=0.0) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with Client(server.base_url) as sync_client:
        yield sync_client


def test_detect_gives_the_same_typed_result_for_raw_pixels_and_png(client):
    frame = noise_frame(40, 56, seed=3)
    from_pixels = client.detect(frame, mask=True)
    from_png = client.detect(png(frame), mask=True)
    assert isinstance(from_pixels, Result)
    assert (from_pixels.width, from_pixels.height, from_pixels.stream_id) == (56, 40, None)
    assert from_pixels.mask is not None and from_pixels.mask.size == [40, 56]
    assert from_pixels.targets == from_png.targets and from_pixels.mask == from_png.mask


def test_sixteen_bit_frames_are_sent_as_they_are(client):
    result = client.detect(noise_frame(40, 56, seed=4, dtype=np.uint16))
    assert (result.width, result.height) == (56, 40)


def test_service_errors_raise_with_their_status_and_code(client):
    with pytest.raises(IrtrackError) as error:
        client.detect(b"certainly not an image")
    assert error.value.status == 415 and error.value.code == "unsupported_format"
    with pytest.raises(IrtrackError) as error:
        client.detect(noise_frame(40, 56, seed=1), model="no-such-model")
    assert error.value.status == 404


def test_rest_stream_frames_update_the_stream_and_delete_frees_it(client):
    for seq in (3, 7):
        result = client.send_frame("rest-cam", noise_frame(40, 56, seed=seq), seq=seq)
        assert (result.stream_id, result.seq) == ("rest-cam", seq)
    info = client.stream_info("rest-cam")
    assert info is not None and info.last_seq == 7 and info.frames.processed == 2
    assert "rest-cam" in {s.stream_id for s in client.streams()}
    client.delete_stream("rest-cam")
    assert client.stream_info("rest-cam") is None


def test_blocking_stream_answers_every_frame_in_order(client):
    frames = [noise_frame(40, 56, seed=s) for s in range(6)]
    stream = client.stream("sync-cam", frames, max_in_flight=2)
    events = list(stream)
    assert [e.seq for e in events] == list(range(6))
    assert all(isinstance(e, FrameEvent) and e.status == "result" for e in events)
    assert all(e.frame is f for e, f in zip(events, frames, strict=True))  # for drawing
    assert stream.stats is not None and stream.stats.results == 6


def test_leaving_a_blocking_stream_early_closes_its_connection(client):
    frame = noise_frame(40, 56, seed=0)
    endless = itertools.repeat(frame)
    for event in client.stream("left-early", endless):
        assert event.status == "result"
        break
    deadline = time.monotonic() + 10
    while client.stream_info("left-early").live_connection:
        assert time.monotonic() < deadline, "the WebSocket stayed open"
        time.sleep(0.05)


def test_a_watcher_sees_the_results_another_client_streams(server):
    frames = [noise_frame(48, 64, seed=s, dtype=np.uint16) for s in range(5)]

    async def stream_while_watching():
        async with AsyncClient(server.base_url) as client:
            watched = []

            async def watch():
                async for result in client.watch("watched-cam", preview_width=32):
                    watched.append(result)
                    if len(watched) == len(frames):
                        return

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0.5)  # the watcher is attached before the stream starts
            sent = [e async for e in client.stream("watched-cam", frames, max_in_flight=1)]
            await asyncio.wait_for(watcher, 30)
            return sent, watched

    sent, watched = asyncio.run(stream_while_watching())
    assert [w.seq for w in watched] == [e.seq for e in sent]
    for watched_result, event in zip(watched, sent, strict=True):
        assert watched_result.targets == event.result.targets
        assert watched_result.watch_dropped == 0  # one frame at a time: it kept up
        preview = watched_result.preview
        jpeg = np.frombuffer(base64.b64decode(preview.jpeg_base64), np.uint8)
        image = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
        assert image.shape == (preview.height, preview.width) == (24, 32)
        assert image.std() > 0  # the 16-bit frame went through gain control, not to black


def test_watching_needs_the_api_key_which_a_browser_may_give_as_a_query_parameter():
    async def watch(url, headers=None):
        async with websockets.connect(url, additional_headers=headers):
            return "accepted"

    with running_server(api_keys=["s3cret"]) as server:
        url = f"{server.ws_url}/v1/streams/cam/watch"
        for query, status in (("", 401), ("?key=wrong", 403)):
            with pytest.raises(InvalidStatus) as refused:
                asyncio.run(watch(url + query))
            assert refused.value.response.status_code == status
        assert asyncio.run(watch(url + "?key=s3cret")) == "accepted"
        assert asyncio.run(watch(url, {"X-API-Key": "s3cret"})) == "accepted"
        page = httpx.get(f"{server.base_url}/viewer")  # the page holds no data: no key
        assert page.status_code == 200 and "/watch" in page.text


# --- the live-stream protocol against a scripted endpoint ------------------------------------
class ScriptedService:
    """Answers each frame like the service (in order, after ``delay_s``); records what it got.

    ``drop_connection_at`` aborts the connection (no close frame, no answers) when that seq
    arrives, once; ``close_code`` closes with that code after the first frame.
    """

    def __init__(self, delay_s=0.02, drop_connection_at=None, close_code=None):
        self.delay_s = delay_s
        self.drop_connection_at = drop_connection_at
        self.close_code = close_code
        self.received = []
        self.connections = 0
        self.unanswered = 0
        self.most_unanswered = 0

    async def handle(self, socket: ServerConnection):
        self.connections += 1
        answers = asyncio.Queue()
        answering = asyncio.create_task(self._answer(socket, answers))
        header = None
        try:
            async for message in socket:
                if isinstance(message, str):
                    header = json.loads(message)
                    continue
                seq = header["seq"]
                self.received.append(seq)
                if seq == self.drop_connection_at:
                    self.drop_connection_at = None
                    socket.transport.abort()
                    return
                if self.close_code is not None:
                    await socket.close(self.close_code, "scripted close")
                    return
                self.unanswered += 1
                self.most_unanswered = max(self.most_unanswered, self.unanswered)
                answers.put_nowait(header)
        finally:
            answering.cancel()
            self.unanswered = 0

    async def _answer(self, socket, answers):
        while True:
            header = await answers.get()
            await asyncio.sleep(self.delay_s)
            self.unanswered -= 1
            await socket.send(json.dumps(_result(header)))


def _result(header):
    return {
        "type": "result",
        "stream_id": "cam",
        "seq": header["seq"],
        "model": "scripted",
        "width": header["width"],
        "height": header["height"],
        "timestamp": header["timestamp"],
        "targets": [],
        "latency_ms": {"queue": 0, "inference": 1, "postprocess": 0, "total": 1},
    }


def stream_through(service, frame_count, **options):
    """Run a LiveStream against the scripted service; returns its events and stats."""

    async def run():
        async with serve(service.handle, "127.0.0.1", 0, compression=None) as endpoint:
            port = endpoint.sockets[0].getsockname()[1]
            async with AsyncClient(f"http://127.0.0.1:{port}", timeout_s=5) as client:
                frames = (np.full((8, 8), i, np.uint8) for i in range(frame_count))
                live = client.stream("cam", frames, **options)
                return [event async for event in live], live.stats

    return asyncio.run(run())


def test_never_more_than_max_in_flight_frames_are_unanswered():
    service = ScriptedService(delay_s=0.02)
    events, stats = stream_through(service, 20, max_in_flight=3)
    assert service.most_unanswered == 3
    assert [e.seq for e in events] == service.received == list(range(20))
    assert stats.results == 20 and stats.skipped == 0


def test_a_live_source_skips_frames_without_credit_and_reports_each_once():
    service = ScriptedService(delay_s=0.05)
    events, stats = stream_through(service, 30, max_in_flight=1, fps=200, when_busy="skip")
    assert service.most_unanswered == 1
    assert [e.seq for e in events] == list(range(30))  # every source frame, in order
    answered = [e.seq for e in events if e.status == "result"]
    skipped = [e for e in events if e.status == "skipped"]
    assert answered == service.received  # exactly the frames that were sent got answers
    assert skipped and all(e.reason == "window_full" for e in skipped)
    assert stats.results + stats.skipped == 30


def test_a_dropped_connection_is_reconnected_and_its_frames_in_flight_reported_lost():
    service = ScriptedService(delay_s=0.01, drop_connection_at=5)
    started = time.monotonic()
    events, stats = stream_through(service, 12, max_in_flight=2)
    gaps = [e for e in events if isinstance(e, Reconnected)]
    frames = [e for e in events if isinstance(e, FrameEvent)]
    assert service.connections == 2 and len(gaps) == 1
    gap = gaps[0]
    assert 5 in gap.lost and all(e.status == "lost" for e in frames if e.seq in gap.lost)
    assert gap.outage_s < time.monotonic() - started and gap.attempts >= 1
    assert [e.seq for e in frames] == list(range(12))
    assert stats.results + stats.lost == 12 and stats.lost == len(gap.lost)
    assert frames[-1].status == "result"  # the stream went on after the gap


def test_a_close_that_reconnecting_cannot_fix_ends_the_stream():
    with pytest.raises(StreamFailed, match="4410"):
        stream_through(ScriptedService(close_code=4410), 5)
