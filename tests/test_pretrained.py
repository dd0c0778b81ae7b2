"""Shipped models by name (crdetect.pretrained, issue #27): the table matches the files, loads check the hash,
create_model gives them trained or untrained in timm's manner."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import crdetect
from crdetect.pretrained import TABLE, WEIGHTS_DIR, describe_weights


def test_the_table_lists_every_shipped_checkpoint_as_it_is():
    table = json.loads((WEIGHTS_DIR / TABLE).read_text())
    assert table == describe_weights(WEIGHTS_DIR)  # rerun scripts/pretrained_table.py after changing a model
    assert list(table)[:2] == ["default", "fast"] and len(table) == 12
    assert crdetect.list_pretrained() == list(table)


def test_a_damaged_shipped_model_is_refused(tmp_path, monkeypatch):
    import crdetect.pretrained

    for name in ("default.pt", TABLE):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    with open(tmp_path / "default.pt", "r+b") as handle:  # one byte changed inside the weights
        handle.seek(2000)
        byte = handle.read(1)
        handle.seek(2000)
        handle.write(bytes([byte[0] ^ 1]))
    monkeypatch.setattr(crdetect.pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(crdetect.CheckpointError, match="is damaged: its SHA-256"):
        crdetect.load_detector("default")  # no network file beside it: the checkpoint, in torch


def test_a_damaged_network_file_is_refused(tmp_path, monkeypatch):
    import crdetect.pretrained

    for name in ("default.pt", "default.onnx", "default.int8.onnx", TABLE):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    with open(tmp_path / "default.int8.onnx", "r+b") as handle:
        handle.seek(20000)
        byte = handle.read(1)
        handle.seek(20000)
        handle.write(bytes([byte[0] ^ 1]))
    monkeypatch.setattr(crdetect.pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(crdetect.CheckpointError, match=r"default.int8.onnx\) is damaged"):
        crdetect.load_detector("default", device="cpu", precision="int8")
    assert crdetect.load_detector("default", device="cpu", precision="float32").backend == "openvino"


def test_create_model_gives_shipped_models_trained_or_untrained():
    trained = crdetect.create_model("fast", pretrained=True)
    untrained = crdetect.create_model("fast")
    assert crdetect.count_parameters(trained) == crdetect.count_parameters(untrained) == 29641
    image = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert not np.allclose(trained.eval()(image).numpy(), untrained.eval()(image).numpy())
    detector_net = crdetect.load_detector("fast", backend="torch").network
    assert crdetect.count_parameters(detector_net) <= 29641  # BatchNorms folded
    assert crdetect.count_parameters(crdetect.create_model("unet", pretrained=True)) == 517793
    with pytest.raises(crdetect.InputError, match="no pretrained weights ship for 'tunet_7'"):
        crdetect.create_model("tunet_7", pretrained=True)
    with pytest.raises(crdetect.InputError, match="takes no constructor arguments"):
        crdetect.create_model("fast", pretrained=True, base_channels=4)
