"""The training data the GPU training run carries, small enough for the device tool.

The device tool carries 64 MiB with the working tree (~25 MB of it the repository). The training
splits of NUDT-SIRST and SIRST-v2 as stored are 13 + 25 MB of PNGs, many of them colour files of a
grey image: each image is stored here as the single-channel frame training reads
(:func:`frames.preprocess.to_gray`) in lossless WebP, under its own ``.png`` name (OpenCV decodes
by content, so the datasets read it unchanged: ``read_gray`` reduces WebP's three equal channels
to the same grey), and checked to read back as the same pixels. Masks
stay PNG. Split files are copied whole; only the training images are carried (SIRST-v2's val
images are not: that run keeps snapshots, selected back home).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import typer

from data.datasets import list_split, read_gray
from frames.preprocess import to_gray

CARRIED = {"nudt-sirst": "train_full", "sirst-v2": "train"}  # dataset -> split carried


def pack(shared_data: Path, destination: Path) -> int:
    """Write the carried datasets under ``destination``; returns the bytes written."""
    written = 0
    for dataset, split in CARRIED.items():
        source, target = shared_data / dataset, destination / dataset
        shutil.copytree(source / "splits", target / "splits", dirs_exist_ok=True)
        for folder in ("images", "masks"):
            (target / folder).mkdir(parents=True, exist_ok=True)
        for name in list_split(source, split):
            gray = read_gray(source / "images" / name)
            ok, image = cv2.imencode(".webp", gray, [cv2.IMWRITE_WEBP_QUALITY, 101])  # lossless
            decoded = cv2.imdecode(image, cv2.IMREAD_UNCHANGED)  # WebP decodes to 3 channels
            if not ok or decoded is None or not np.array_equal(to_gray(decoded), gray):
                raise ValueError(f"{dataset}/{name}: lossless WebP did not round-trip")
            (target / "images" / name).write_bytes(image.tobytes())
            shutil.copyfile(source / "masks" / name, target / "masks" / name)
            written += image.nbytes + (source / "masks" / name).stat().st_size
    return written


def main(
    shared_data: Annotated[Path, typer.Argument(help="the shared datasets")],
    destination: Annotated[Path, typer.Argument(help="the carried folder's data/")],
) -> None:
    typer.echo(f"{pack(shared_data, destination) / 2**20:.1f} MiB of training data")


if __name__ == "__main__":
    typer.run(main)
