"""Checkpoints that resume a run exactly: safetensors for tensors, JSON for the rest, no pickle."""

from __future__ import annotations

import json
import os
import random
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel

from training.config import Hyper

CHECKPOINT = "last.ckpt"


@dataclass
class Progress:
    """Where a run stands; the JSON half of a checkpoint."""

    epoch: int = 0  # completed epochs
    iteration: int = 0  # completed iterations over all epochs
    best_metric: float | None = None  # best val mIoU so far
    best_epoch: int | None = None
    epoch_loss_sum: float = 0.0  # running sums of the epoch in progress
    epoch_batches: int = 0
    epoch_seconds: float = 0.0
    seconds_per_iteration: float | None = None  # of the last finished epoch
    # the training stages behind the weights the run started from (loop.earlier_stages); None in
    # checkpoints written before they were kept here
    earlier_stages: list[dict[str, Any]] | None = None


def save_checkpoint(
    out: Path,
    hyper: Hyper,
    progress: Progress,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema: AveragedModel | None = None,
) -> None:
    """Write last.ckpt (tensors) and last.ckpt.json (the rest), each atomically (temp + rename);
    a shared random id pairs them, so a crash between the two renames is detected on load."""
    checkpoint_id = uuid.uuid4().hex
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update(
            {f"ema/{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        )
    optimizer_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{index}"] = state
    numpy_kind, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64))
    python_version, python_state, python_gauss = random.getstate()
    sidecar = {
        "format": "irtrack-checkpoint-1",
        "checkpoint_id": checkpoint_id,
        "hyper": asdict(hyper),
        "progress": asdict(progress),
        "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": scalars},
        "scaler": scaler.state_dict(),
        "rng": {
            "numpy": [numpy_kind, numpy_pos, numpy_has_gauss, numpy_gauss],
            "python": [python_version, list(python_state), python_gauss],
        },
        "saved": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.mkdir(parents=True, exist_ok=True)
    tensor_path, json_path = out / CHECKPOINT, out / f"{CHECKPOINT}.json"
    save_file(tensors, str(tensor_path) + ".tmp", metadata={"checkpoint_id": checkpoint_id})
    Path(str(json_path) + ".tmp").write_text(json.dumps(sidecar, indent=1))
    os.replace(str(tensor_path) + ".tmp", tensor_path)
    os.replace(str(json_path) + ".tmp", json_path)


def read_checkpoint(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, sidecar) of OUT/last.ckpt; checks that the two files belong together."""
    tensor_path, json_path = out / CHECKPOINT, out / f"{CHECKPOINT}.json"
    sidecar = json.loads(json_path.read_text())
    with safe_open(str(tensor_path), framework="pt") as handle:
        tensor_id = (handle.metadata() or {}).get("checkpoint_id")
    if tensor_id != sidecar.get("checkpoint_id"):
        raise ValueError(f"{tensor_path} and {json_path} come from different saves")
    return load_file(str(tensor_path)), sidecar


def restore_checkpoint(
    tensors: dict[str, torch.Tensor],
    sidecar: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema: AveragedModel | None = None,
) -> Progress:
    """Load weights, optimizer, scaler, weight average and RNG states saved by
    :func:`save_checkpoint`."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in sidecar["optimizer"]["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in sidecar["optimizer"]["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scaler.load_state_dict(sidecar["scaler"])
    torch.set_rng_state(tensors["rng/torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    kind, pos, has_gauss, gauss = sidecar["rng"]["numpy"]
    np.random.set_state(
        (kind, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss)
    )
    version, python_state, python_gauss = sidecar["rng"]["python"]
    random.setstate((version, tuple(python_state), python_gauss))
    return Progress(**sidecar["progress"])
