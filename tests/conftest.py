"""Shared fixtures: the real data beside the repository and small checkpoints made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real frames and the CR footprint library). In CI it must be there."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing in CI")
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small untrained deepCR-style U-Net saved as a crdetect checkpoint (fast CLI tests)."""
    from crdetect import Preprocessing, create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("deepcr_unet", base_channels=8)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, Preprocessing(), threshold=0.5, metrics={"note": "untrained"})
    return path


@pytest.fixture
def untrained_registry(monkeypatch, tmp_path):
    """Only `default` and `fast` shipped: the study's registry names have no weights (as before they were
    shipped), for the tests of untrained networks."""
    import crdetect.pretrained

    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("default.pt", "fast.pt", crdetect.pretrained.TABLE):
        (weights / name).symlink_to(crdetect.pretrained.WEIGHTS_DIR / name)
    monkeypatch.setattr(crdetect.pretrained, "WEIGHTS_DIR", weights)
    return weights
