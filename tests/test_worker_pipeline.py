"""The worker's pipeline: the next batch is submitted before the one before is post-processed.

On a CPU a batch has run by the time it is submitted, so these tests give the real runtime's
results a late arrival (``LateRuntime``: the logits are fetched only when the worker asks for
them) and record the order in which the worker submits, waits and answers. The queue is a
narrow scripted fake: each ``receive`` hands out the next prepared group of messages.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from service_support import noise_frame

from models.std2net import StreamState
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.transport.messages import FrameRequest, FrameResult, StreamRelease
from service.transport.queue import FrameQueue, WorkerMessage
from service.worker.runtime import ModelRuntime, PendingLogits
from service.worker.worker import InferenceWorker

pytestmark = pytest.mark.timeout(120)

SIZE = 64
# On CUDA the runtime's own results arrive late too (pinned buffers, events): the same checks.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
    ),
]


class ScriptedQueue(FrameQueue):
    """Hands out one prepared group of messages per ``receive``; records every reply."""

    def __init__(self, groups: list[list[WorkerMessage]], log: list[tuple]) -> None:
        self._groups = deque(groups)
        self._log = log
        self._closed = threading.Event()
        self.results: dict[str, FrameResult] = {}

    async def submit(self, request: FrameRequest) -> FrameResult:
        raise NotImplementedError

    def release_stream(self, release: StreamRelease) -> None:
        raise NotImplementedError

    async def healthy(self) -> bool:
        return True

    def receive(self, timeout_s: float) -> list[WorkerMessage]:
        if self._groups:
            group = self._groups.popleft()
            self._log.append(("receive", [_name(message) for message in group]))
            return group
        self._closed.wait(min(timeout_s, 0.05))
        return []

    def reply(self, result: FrameResult) -> None:
        self._log.append(("reply", result.request_id))
        self.results[result.request_id] = result

    def close(self) -> None:
        self._closed.set()

    def abandon(self) -> None:
        self.close()


class LateLogits:
    """A pending result that is only computed when asked for, and may fail then."""

    def __init__(self, pending: PendingLogits, batch: int, log: list[tuple], fail: bool) -> None:
        self._pending, self._batch, self._log, self._fail = pending, batch, log, fail
        self.oversized = pending.oversized

    def result(self) -> list[np.ndarray]:
        self._log.append(("result", self._batch))
        if self._fail:
            raise RuntimeError("an asynchronous device error")
        return self._pending.result()


class LateRuntime(ModelRuntime):
    """The real runtime whose logits arrive when ``result()`` is called, as a GPU's do."""

    def __init__(self, settings: Settings, log: list[tuple], failing_batches: set[int]) -> None:
        super().__init__(settings)
        self._log = log
        self._failing = failing_batches
        self.submitted = 0

    def submit(
        self,
        model_name: str,
        frames: Sequence[np.ndarray],
        states: Sequence[StreamState] | None = None,
    ) -> PendingLogits:
        pending = super().submit(model_name, frames, states)
        batch = self.submitted
        self.submitted += 1
        self._log.append(("submit", batch))
        return LateLogits(pending, batch, self._log, batch in self._failing)  # type: ignore[return-value]


def _name(message: WorkerMessage) -> str:
    return (
        message.request_id if isinstance(message, FrameRequest) else f"release:{message.stream_id}"
    )


def request(stream: str, seq: int = 0, model: str = "sd2net") -> FrameRequest:
    return FrameRequest(
        request_id=f"{stream}{seq}",
        model=model,
        frame=noise_frame(SIZE, SIZE, seed=ord(stream[0]) * 100 + seq),
        received_at=0.0,
        timestamp=float(seq),
        want_mask=True,
        stream_id=stream,
        session=f"session-{stream}",
        seq=seq,
        frames_before=seq,
    )


def serve(
    groups: list[list[WorkerMessage]],
    *,
    pipeline: bool = True,
    failing_batches: frozenset[int] = frozenset(),
    model: str = "sd2net",
    device: str = "cpu",
) -> tuple[list[tuple], ScriptedQueue]:
    """Run a worker (max_batch 2) over the scripted messages until it has answered every frame."""
    settings = Settings(
        models=[model],
        default_model=model,
        device=device,
        inference_backend="torch",
        warmup_sizes=[f"{SIZE}x{SIZE}"],
        max_batch=2,
        max_wait_ms=10_000,  # only full batches are due: the order below is deterministic
        pipeline=pipeline,
    )
    log: list[tuple] = []
    runtime = LateRuntime(settings, log, set(failing_batches))
    queue = ScriptedQueue([], log)
    worker = InferenceWorker(queue, runtime, settings, ServiceMetrics())
    release = worker._states.release

    def logged_release(stream_id: str, session: str) -> None:
        log.append(("release", stream_id))
        release(stream_id, session)

    worker._states.release = logged_release  # type: ignore[method-assign]
    worker.start()
    assert worker.ready.wait(60), worker.load_error
    runtime.submitted = 0  # the warm-up's calls are not the batches under test
    log.clear()
    queue._groups.extend(groups)
    frames = sum(isinstance(m, FrameRequest) for group in groups for m in group)
    worker.stop(timeout_s=60)  # the worker finishes what it received, then ends
    assert not worker.alive
    assert len(queue.results) == frames
    return log, queue


def position(log: list[tuple], event: tuple) -> int:
    return log.index(event)


def test_the_next_batch_is_submitted_before_the_one_before_is_answered():
    frames = [request(stream) for stream in "abcdef"]
    log, queue = serve([frames])
    # Three full batches of two: each batch is submitted before the one before it is waited
    # for and answered; the last one is finished without any further frame arriving.
    assert [event for event in log if event[0] in ("submit", "result")] == [
        ("submit", 0),
        ("submit", 1),
        ("result", 0),
        ("submit", 2),
        ("result", 1),
        ("result", 2),
    ]
    for batch, (first, second) in enumerate(["ab", "cd", "ef"]):
        answered = min(
            position(log, ("reply", f"{first}0")), position(log, ("reply", f"{second}0"))
        )
        assert position(log, ("result", batch)) < answered
        if batch < 2:
            assert position(log, ("submit", batch + 1)) < answered
    assert all(result.error_code is None for result in queue.results.values())


@pytest.mark.parametrize("device", DEVICES)
def test_pipelined_answers_equal_unpipelined_answers(device: str):
    frames = [request(stream, seq) for seq in range(2) for stream in "abcd"]
    pipelined = serve([frames[:4], frames[4:]], device=device)[1].results
    serial_log, serial_queue = serve([frames[:4], frames[4:]], pipeline=False, device=device)
    serial = serial_queue.results
    # Unpipelined: every batch is waited for and answered before the next is submitted.
    events = [event for event in serial_log if event[0] in ("submit", "result")]
    assert events == [(kind, n) for n in range(4) for kind in ("submit", "result")]
    assert sum(len(result.detections) for result in serial.values()) > 0
    for request_id, result in serial.items():
        other = pipelined[request_id]
        assert [d.component for d in other.detections] == [d.component for d in result.detections]
        assert [d.track_id for d in other.detections] == [d.track_id for d in result.detections]
        assert other.mask_rle == result.mask_rle


def test_a_stream_in_flight_is_finished_before_its_next_frame_is_submitted():
    # A peer that sends a stream's next frame before the first was answered: batch 1 holds
    # a1, which must not go through the model (and tracker) before a0 is finished.
    log, queue = serve([[request("a", 0), request("b"), request("a", 1), request("c")]])
    assert position(log, ("result", 0)) < position(log, ("submit", 1))
    assert position(log, ("reply", "a0")) < position(log, ("submit", 1))
    assert queue.results["a1"].error_code is None


@pytest.mark.parametrize("device", DEVICES)
def test_std2net_windows_advance_in_order_under_the_pipeline(device: str):
    frames = [[request(stream, seq, "std2net") for stream in "abcd"] for seq in range(3)]
    pipelined = serve(frames, model="std2net", device=device)[1].results
    serial = serve(frames, model="std2net", pipeline=False, device=device)[1].results
    for request_id, result in serial.items():
        assert [d.component for d in pipelined[request_id].detections] == [
            d.component for d in result.detections
        ]


def test_a_release_waits_for_its_stream_in_flight():
    log, queue = serve([[request("a"), request("b")], [StreamRelease("a", "session-a")]])
    # The release arrives while a0 is in flight: a0 is answered with its stream's tracker
    # first, then the stream is freed.
    assert position(log, ("receive", ["release:a"])) < position(log, ("result", 0))
    assert position(log, ("reply", "a0")) < position(log, ("release", "a"))
    assert queue.results["a0"].error_code is None


def test_a_late_failure_answers_its_batch_with_errors_and_spares_the_others():
    frames = [request(stream) for stream in "abcdef"]
    _, queue = serve([frames], failing_batches=frozenset({1}))
    codes = {request_id: result.error_code for request_id, result in queue.results.items()}
    assert codes == {
        "a0": None,
        "b0": None,
        "c0": "inference_error",
        "d0": "inference_error",
        "e0": None,
        "f0": None,
    }
    assert "asynchronous device error" in (queue.results["c0"].error_message or "")
