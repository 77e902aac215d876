"""The service's configuration: one typed class, read from ``IRTRACK_*`` environment variables.

Every knob has a documented default that runs on a laptop CPU; invalid values fail at start-up
with pydantic's message naming the variable, never later in the middle of a stream.
List-valued settings are comma-separated in the environment (``IRTRACK_API_KEYS=key1,key2``);
nested ones use ``__`` (``IRTRACK_TRACKER__CONFIRM_HITS=2``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from frames.postprocess import DEFAULT_MIN_AREA, DEFAULT_THRESHOLD
from frames.sizes import parse_size
from frames.tracking import TrackerSettings
from models import MODEL_NAMES


class Settings(BaseSettings):
    """All service settings; the environment variable is ``IRTRACK_`` + the upper-cased name."""

    model_config = SettingsConfigDict(
        env_prefix="IRTRACK_", env_nested_delimiter="__", extra="ignore"
    )

    # --- network -------------------------------------------------------------------------------
    host: str = Field(
        default="127.0.0.1", description="Interface to bind (0.0.0.0 inside a container)."
    )
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0 = any free port).")

    # --- models --------------------------------------------------------------------------------
    models: Annotated[list[str], NoDecode] = Field(
        default=list(MODEL_NAMES), description="Models to load at start-up, comma-separated."
    )
    default_model: str = Field(
        default="sd2net", description="Model of /v1/detect when a request names none."
    )
    stream_model: str | None = Field(
        default=None,
        description="Model of a new stream whose first frame names none; unset: std2net where "
        "it is loaded and its worker has a GPU, else default_model (on a CPU, STD2Net's cached "
        "step is several times slower than SD2Net: docs/performance.md).",
    )
    weights_dir: Path | None = Field(
        default=None,
        description="Folder with <model>.safetensors; unset = the weights shipped in "
        "models/weights/ (random init with a loud warning where none is shipped).",
    )
    device: str = Field(
        default="auto", description="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1'."
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="Inference dtype; reduced precision only pays off on a GPU."
    )
    inference_backend: Literal["auto", "torch", "onnxruntime"] = Field(
        default="auto",
        description="What runs the single-frame models (sd2net, lrrnet): 'auto' = ONNX Runtime on "
        "a CPU in float32 (faster there: `irtrack bench onnx`), torch otherwise; 'onnxruntime' "
        "insists (CPU and float32 only). STD2Net's cached streaming always runs in torch.",
    )
    cuda_graphs: bool = Field(
        default=True,
        description="On CUDA, replay a captured CUDA graph of the single-frame models per "
        "(batch bucket, frame size) instead of launching their kernels one by one.",
    )
    channels_last: bool = Field(
        default=False,
        description="Run torch models in channels_last memory format (`irtrack bench models "
        "--mode channels-last` says whether it pays on a given GPU).",
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="CPU threads for torch; unset = torch's default."
    )
    seed: int = Field(
        default=0, description="Seed for the random-init fallback, so restarts agree."
    )
    warmup_sizes: Annotated[list[str], NoDecode] = Field(
        default=["256x256"],
        description="Frame sizes WIDTHxHEIGHT run once per model before /readyz turns 200.",
    )

    # --- batching ------------------------------------------------------------------------------
    max_batch: int = Field(default=8, ge=1, description="Most frames in one model call.")
    max_wait_ms: float = Field(
        default=5.0,
        ge=0,
        description="Longest a frame waits for batch-mates before its batch runs.",
    )

    pipeline: bool = Field(
        default=True,
        description="Submit the next due batch before post-processing the one before, so a GPU "
        "runs one while the CPU answers the other (no effect on a CPU, where a batch has run "
        "once submitted).",
    )

    # --- live-stream policy and limits ---------------------------------------------------------
    stream_queue_depth: int = Field(
        default=2,
        ge=1,
        description="Frames a stream may have waiting behind the one being processed; beyond it "
        "the newest frame wins (WebSocket) or the caller gets 429 (REST).",
    )
    global_queue_limit: int = Field(
        default=64,
        ge=1,
        description="Frames admitted but not yet answered, over all streams and callers.",
    )
    max_streams: int = Field(default=64, ge=1, description="Concurrent streams with state.")
    stream_idle_ttl_s: float = Field(
        default=300.0, gt=0, description="A stream with no frame for this long is freed."
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest request body / WebSocket message."
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest a request body may take to arrive; then 408 and the connection "
        "is closed (a stalled or trickling upload holds memory and a connection).",
    )
    body_idle_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest silence within a request body; then 408."
    )
    max_frame_pixels: int = Field(
        default=2048 * 2048, ge=1, description="Largest width*height, checked before decoding."
    )
    memory_budget_bytes: int | None = Field(
        default=None,
        ge=1 << 20,
        description="Memory that a model call and the streams' state (STD2Net windows) may take "
        "together, estimated per frame from its padded size and the model (`irtrack bench "
        "memory`): a frame that alone needs more is refused (413 frame_too_large), one that "
        "does not fit beside the open streams' state waits for room (429 memory_full), and "
        "batches are cut to fit. Unset: 1 GiB on a CPU (the worst admissible request then fits "
        "in 2 GB with all models loaded, docs/reliability.md), 80% of the GPU's memory on CUDA.",
    )
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After sent with 429 and 503.")

    # --- post-processing -----------------------------------------------------------------------
    threshold: float = Field(
        default=DEFAULT_THRESHOLD, gt=0, lt=1, description="Probability above which a pixel is on."
    )
    min_area: int = Field(
        default=DEFAULT_MIN_AREA,
        ge=1,
        description="Smallest component (pixels) reported as a target.",
    )

    # --- tracking ------------------------------------------------------------------------------
    tracker: TrackerSettings = Field(
        default_factory=TrackerSettings,
        description="Per-stream tracker; one variable per field, e.g. IRTRACK_TRACKER__MAX_GAP=15.",
    )

    # --- security ------------------------------------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted X-API-Key values, comma-separated; empty = no authentication.",
    )

    log_level: str = Field(default="info", description="Python logging level name.")

    # --- scale-out: Redis Streams between API processes and `irtrack worker` processes ---------
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("irtrack_redis_url", "redis_url"),
        description="redis://host:port/db (also read from REDIS_URL); unset = the embedded "
        "in-process queue, no workers needed.",
    )
    redis_prefix: str = Field(
        default="irtrack", min_length=1, description="Prefix of every Redis key of this service."
    )
    redis_shards: int = Field(
        default=16,
        ge=1,
        description="Stream ids hash into this many shards; a worker holds a lease per shard. "
        "The same on every process; more shards than workers spread the load evenly.",
    )
    redis_lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="A worker whose leases went unrenewed this long is dead: its shards and "
        "pending frames move to another worker, whose streams start cold. A killed worker is seen "
        "dead sooner, when its Redis connections close (within a second).",
    )
    redis_queue_limit: int = Field(
        default=64,
        ge=1,
        description="Frames waiting in Redis per shard; beyond it a frame is refused (429) or "
        "dropped (WebSocket) as overloaded.",
    )
    redis_result_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest an API process waits for a worker's answer before the frame fails "
        "with worker_timeout.",
    )

    @field_validator("models", "warmup_sizes", "api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        """Accept ``"a,b"`` from the environment as well as a real list from Python code."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("warmup_sizes")
    @classmethod
    def _sizes_are_width_x_height(cls, sizes: list[str]) -> list[str]:
        for size in sizes:
            parse_size(size)
        return sizes

    @model_validator(mode="after")
    def _models_are_known(self) -> Settings:
        unknown = sorted(set(self.models) - set(MODEL_NAMES))
        if unknown:
            raise ValueError(f"unknown models {unknown}; choose from {list(MODEL_NAMES)}")
        if not self.models:
            raise ValueError("IRTRACK_MODELS must name at least one model")
        for option in ("default_model", "stream_model"):
            chosen = getattr(self, option)
            if chosen is not None and chosen not in self.models:
                raise ValueError(
                    f"{option} {chosen!r} is not among the loaded models {self.models}"
                )
        return self

    def warmup_shapes(self) -> list[tuple[int, int]]:
        """The warm-up sizes as (height, width)."""
        return [parse_size(size) for size in self.warmup_sizes]
