"""The GPU training run, checked on the CPU: its jobs, its time budget, its carried data."""

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require_path

from bench.gpu.pack_data import pack
from bench.gpu.train import JOBS, fitting_epochs, main
from data.datasets import IRSTDDataset
from data.paths import DATA_DIR


def test_epochs_fit_the_slot_and_never_exceed_the_recipe():
    job = JOBS[0]
    assert fitting_epochs(job, seconds_per_iteration=0.01, iterations_per_epoch=37) == int(
        0.85 * job.slot_s / 0.37
    )
    assert fitting_epochs(job, seconds_per_iteration=1e-6, iterations_per_epoch=37) == job.epochs
    assert fitting_epochs(job, seconds_per_iteration=100.0, iterations_per_epoch=37) == 1


def test_the_jobs_fit_the_device_tools_ten_minutes():
    assert sum(job.slot_s for job in JOBS) <= 9 * 60 - 60  # calibrations and packing


def test_the_smoke_run_packs_every_jobs_weights(tmp_path: Path):
    require_path(DATA_DIR / "sirst-v2", "the shared datasets")
    main(out=tmp_path, smoke=True, data_dir=DATA_DIR)
    for job in JOBS:
        with tarfile.open(tmp_path / f"{job.name}.tar") as archive:
            names = archive.getnames()
        assert f"{job.name}/log.jsonl" in names
        if job.validate_here:
            assert f"{job.name}/best.safetensors" in names
        else:
            assert any(name.startswith(f"{job.name}/snapshots/epoch-") for name in names)


def test_carried_images_read_back_as_the_same_pixels(tmp_path: Path):
    shared = tmp_path / "shared"
    rng = np.random.default_rng(0)
    for dataset, split_file in (("nudt-sirst", "train.txt"), ("sirst-v2", "train.txt")):
        for folder in ("images", "masks", "splits"):
            (shared / dataset / folder).mkdir(parents=True)
        (shared / dataset / "splits" / split_file).write_text("a\nb\n")
        if dataset == "sirst-v2":
            (shared / dataset / "splits" / "val.txt").write_text("c\n")
        for name in ("a", "b"):
            colour = rng.integers(0, 255, (40, 48), np.uint8)
            cv2.imwrite(str(shared / dataset / "images" / f"{name}.png"), np.dstack([colour] * 3))
            cv2.imwrite(str(shared / dataset / "masks" / f"{name}.png"), (colour > 250) * 255)
    carried = tmp_path / "carried"
    pack(shared, carried)
    for dataset in ("nudt-sirst", "sirst-v2"):
        original, copy = (
            IRSTDDataset(shared / dataset, "train"),
            IRSTDDataset(carried / dataset, "train"),
        )
        for index in range(len(original)):
            for got, expected in zip(copy.load(index), original.load(index), strict=True):
                assert np.array_equal(got, expected)
    assert not (carried / "sirst-v2" / "images" / "c.png").exists()


@pytest.mark.parametrize("script", ["train.sh", "prepare_training.sh", "collect_training.sh"])
def test_the_scripts_are_executable(script: str):
    path = Path(__file__).resolve().parents[1] / "bench" / "gpu" / script
    assert path.stat().st_mode & 0o111
