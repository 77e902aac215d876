"""The embedded mode's worker: the models on a thread of the API process (``irtrack serve``
without Redis), fed by the in-process queue."""

from __future__ import annotations

from service.metrics import ServiceMetrics
from service.settings import Settings
from service.transport.queue import InProcessQueue
from service.worker.runtime import ModelRuntime
from service.worker.worker import InferenceWorker


def embedded_worker(
    queue: InProcessQueue, settings: Settings, metrics: ServiceMetrics
) -> InferenceWorker:
    """A worker on ``queue``; its runtime checks the weights files now and loads them on start."""
    return InferenceWorker(queue, ModelRuntime(settings), settings, metrics)
