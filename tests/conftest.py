"""Shared fixtures: locations of the shared data and reference outputs, skipped with a reason when absent."""

from pathlib import Path

import pytest
import torch

from data.paths import DATA_DIR, GOLDEN_DIR

torch.manual_seed(0)


def require_path(path: Path, what: str) -> Path:
    """Skip the calling test unless ``path`` exists (a user's fresh checkout has no shared folder)."""
    if not path.exists():
        pytest.skip(
            f"{what} not found at {path}: it lives in the shared folder beside the repository"
        )
    return path


@pytest.fixture
def golden_dir() -> Path:
    return require_path(GOLDEN_DIR, "reference outputs (shared/golden)")


@pytest.fixture
def data_dir() -> Path:
    return require_path(DATA_DIR, "infrared datasets (shared/data)")
