"""Self-describing checkpoints: round trip, and clear errors for every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crdetect import CheckpointError, Preprocessing, create_model, load_checkpoint, load_detector, save_checkpoint
from crdetect.errors import InputError


def test_round_trip_keeps_weights_preprocessing_and_metadata(tmp_path):
    torch.manual_seed(1)
    model = create_model("tunet_4", num_layers=2)
    pre = Preprocessing(asinh_softening=5.0)
    path = save_checkpoint(tmp_path / "m.pt", model, pre, threshold=0.3, training_config={"lr": 1e-3},
                           metrics={"val_dice": 0.9})
    loaded, info = load_checkpoint(path)
    assert info.model_name == "tunet_4" and info.model_kwargs == {"num_layers": 2}
    assert info.preprocessing == pre and info.threshold == 0.3 and info.metrics == {"val_dice": 0.9}
    assert info.training_config == {"lr": 1e-3} and info.crdetect_version
    assert not loaded.training
    x = torch.randn(1, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_half_checkpoints_are_smaller_and_load_into_float32(tmp_path):
    torch.manual_seed(2)
    model = create_model("deepcr_unet", base_channels=8)
    with torch.no_grad():
        model(torch.randn(2, 1, 32, 32))  # training mode: running statistics move away from 0 and 1
    model.eval()
    full = save_checkpoint(tmp_path / "full.pt", model, Preprocessing())
    half = save_checkpoint(tmp_path / "half.pt", model, Preprocessing(), half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    stored = torch.load(half, weights_only=True)["state_dict"]
    assert {v.dtype for k, v in stored.items() if k.endswith("weight")} == {torch.float16}
    assert all(v.dtype == torch.float32 for k, v in stored.items() if k.endswith(("running_mean", "running_var")))
    loaded, _ = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for name, value in loaded.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, model.state_dict()[name], rtol=1e-3, atol=1e-7)


def test_wrapped_models_are_saved_unwrapped(tmp_path):
    model = create_model("deepcr_unet", base_channels=8)
    path = save_checkpoint(tmp_path / "m.pt", torch.nn.DataParallel(model), Preprocessing())
    payload = torch.load(path, weights_only=True)
    assert not any(k.startswith("module.") for k in payload["state_dict"])
    # and prefixed state dicts (from other tools) load
    payload["state_dict"] = {f"module._orig_mod.{k}": v for k, v in payload["state_dict"].items()}
    torch.save(payload, tmp_path / "prefixed.pt")
    load_checkpoint(tmp_path / "prefixed.pt")


def test_detector_from_checkpoint_uses_its_threshold(tmp_path, tiny_checkpoint):
    detector = load_detector(tiny_checkpoint, device="cpu")
    assert detector.threshold == 0.5 and "deepcr_unet" in detector.name
    assert load_detector(str(tiny_checkpoint), device="cpu", threshold=0.2).threshold == 0.2
    probability = detector.predict_proba(np.random.default_rng(0).normal(size=(40, 40)))
    assert probability.shape == (40, 40)


def test_corrupt_and_foreign_files_get_clear_errors(tmp_path, tiny_checkpoint):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a PyTorch file"):
        load_checkpoint(truncated)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(text)
    bare = tmp_path / "bare.pt"
    torch.save(create_model("deepcr_unet").state_dict(), bare)
    with pytest.raises(CheckpointError, match="not a crdetect checkpoint"):
        load_checkpoint(bare)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_the_architecture(tmp_path, tiny_checkpoint):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["model_kwargs"] = {}  # claims the 32-channel model, holds 8-channel weights
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit model 'deepcr_unet'"):
        load_checkpoint(tmp_path / "mismatch.pt")
    payload["model_name"] = "no_such_net"
    torch.save(payload, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="unknown model 'no_such_net'"):
        load_checkpoint(tmp_path / "unknown.pt")
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="upgrade crdetect"):
        load_checkpoint(tmp_path / "future.pt")


def test_unknown_model_name_in_load_detector():
    with pytest.raises(ValueError, match="Did you mean 'deepcr_unet'"):
        load_detector("deepcr-unet")


def test_untrained_registry_model_warns(caplog, untrained_registry):
    detector = load_detector("unet", device="cpu")
    assert "untrained" in detector.name
    assert "no trained weights" in caplog.text


STUDY_MODELS = ["deepcr_unet", "unet", "cosmic_conn", "att_unet", "tunet_2", "tunet_3", "tunet_4", "tunet_9", "tunet_5",
                "tunet_6"]


def test_every_study_model_ships_trained_with_its_test_numbers(capsys):
    from crdetect.cli import main
    from crdetect.inference import shipped_weights

    for name in STUDY_MODELS:
        _, info = load_checkpoint(shipped_weights(name))
        assert info.model_name == name and info.extra["shipped_name"] == name
        assert set(info.extra["test"]) == {"dice", "tpr@1e-4"} and info.extra["trained_on"]
        assert shipped_weights(name).with_suffix(".md").is_file()  # its model card
    detector = load_detector("tunet_3", device="cpu")
    assert "untrained" not in detector.name
    image = np.random.default_rng(0).normal(100, 5, (64, 64)).astype(np.float32)
    image[30, 20:40] += 400  # a track
    assert detector.detect(image)[30, 25:35].all()
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "tunet_3" in listed and "test dice" in listed and listed.index("  default ") < listed.index("  tunet_3 ")


def test_cuda_request_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="no CUDA GPU"):
        load_detector("unet", device="cuda")
