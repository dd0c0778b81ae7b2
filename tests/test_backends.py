"""The network's runtimes (crdetect.inference.backends, issue #26): the shipped network files give their
checkpoints' logits in OpenVINO, the int8 networks keep the masks, auto picks them, the output header says which
ran, and detection runs without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

import crdetect
from crdetect.cli import main
from crdetect.inference.backends import resolve_backend
from crdetect.pretrained import pretrained_models


def _frame(shape=(300, 340), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 10.0, shape).astype(np.float32)
    image[rng.integers(0, shape[0], 60), rng.integers(0, shape[1], 60)] += rng.uniform(100.0, 3000.0, 60)
    return image


WITH_NETWORK_FILES = [name for name, entry in pretrained_models().items() if "float32" in entry.networks]


def test_the_shipped_models_for_real_frames_have_network_files():
    assert {"default", "fast"} <= set(WITH_NETWORK_FILES)
    for name in ("default", "fast"):
        assert set(pretrained_models()[name].networks) == {"float32", "int8"}


@pytest.mark.parametrize("name", WITH_NETWORK_FILES)
def test_a_network_file_gives_its_checkpoints_logits_whole_and_tiled(name):
    image = _frame()
    checkpoint = crdetect.load_detector(name, device="cpu", backend="torch", precision="float32", source_veto=False)
    network_file = crdetect.load_detector(name, device="cpu", backend="openvino", precision="float32",
                                          source_veto=False)
    assert (network_file.backend, network_file.network) == ("openvino", None)
    for tile in (None, 128):
        a, b = checkpoint.predict(image, tile=tile), network_file.predict(image, tile=tile)
        finite = np.isfinite(a.logits)
        np.testing.assert_allclose(b.logits[finite], a.logits[finite], atol=1e-3)
        np.testing.assert_array_equal(b.mask, a.mask)


@pytest.mark.parametrize("name", ["default", "fast"])
def test_int8_keeps_the_mask_and_auto_picks_it_on_a_cpu(name):
    image = _frame(seed=3)
    exact = crdetect.load_detector(name, device="cpu", backend="torch", precision="float32")
    quantised = crdetect.load_detector(name)  # auto: what crdetect detect runs on this CPU
    assert (quantised.backend, quantised.precision, quantised.device) == ("openvino", "int8", "cpu")
    a, b = exact.predict(image), quantised.predict(image)
    assert a.mask.sum() > 40 and (a.mask != b.mask).sum() <= 2
    undecided = (a.probability > 0.01) & (a.probability < 0.99)
    assert np.abs(a.logits[undecided] - b.logits[undecided]).max(initial=0.0) < 3.0


def test_a_checkpoint_of_ones_own_runs_in_torch_or_converted(tiny_checkpoint):
    image = _frame((96, 80))
    in_torch = crdetect.load_detector(str(tiny_checkpoint), device="cpu")
    assert (in_torch.backend, in_torch.precision) == ("torch", in_torch.precision)
    converted = crdetect.load_detector(str(tiny_checkpoint), device="cpu", backend="openvino", precision="float32")
    assert converted.backend == "openvino"
    np.testing.assert_allclose(converted.predict(image, source_veto=False).logits,
                               in_torch.predict(image, source_veto=False).logits, atol=1e-3)
    with pytest.raises(crdetect.InputError, match="only the shipped models have one"):
        crdetect.load_detector(str(tiny_checkpoint), device="cpu", backend="openvino", precision="int8")


def test_the_header_records_the_runtime_and_arithmetic(tmp_path):
    fits.PrimaryHDU(_frame()).writeto(tmp_path / "f.fits")
    runs = {"torch": ["--backend", "torch", "--precision", "float32"],
            "openvino": ["--backend", "openvino", "--precision", "float32"], "auto": []}
    for name, options in runs.items():
        assert main(["detect", str(tmp_path / "f.fits"), *options, "--out-dir", str(tmp_path / name), "-q"]) == 0
    header = fits.getheader(tmp_path / "auto" / "f_crmask.fits", "CRMASK")
    assert (header["CRBACKND"], header["CRPRECIS"]) == ("openvino", "int8")
    assert fits.getheader(tmp_path / "torch" / "f_crmask.fits", "CRMASK")["CRBACKND"] == "torch"
    np.testing.assert_array_equal(fits.getdata(tmp_path / "torch" / "f_crmask.fits", "CRMASK"),
                                  fits.getdata(tmp_path / "openvino" / "f_crmask.fits", "CRMASK"))


def test_runtime_choices_are_checked():
    with pytest.raises(crdetect.InputError, match="unknown backend 'tensorrt'"):
        resolve_backend("tensorrt", "cpu", "float32")
    assert resolve_backend("auto", "cpu", "auto") == "openvino"
    assert resolve_backend("auto", "cpu", "auto", network_file=False) == "torch"  # a checkpoint of one's own
    assert resolve_backend("auto", "cpu", "bfloat16") == "torch"  # torch's autocast
    with pytest.raises(crdetect.InputError, match="runs float32 or int8 on the CPU"):
        resolve_backend("openvino", "cpu", "bfloat16")
    with pytest.raises(crdetect.InputError, match="int8 runs in OpenVINO"):
        resolve_backend("torch", "cpu", "int8")
    with pytest.raises(crdetect.InputError, match="--compile is torch's"):
        crdetect.load_detector("fast", device="cpu", backend="openvino").compile()
    with pytest.raises(crdetect.InputError, match="no int8 network"):
        crdetect.load_detector("unet", device="cpu", backend="openvino", precision="int8")


# torch made unimportable in a fresh interpreter: what a core install (pip install crdetect) has
WITHOUT_TORCH = "import sys; sys.modules['torch'] = None; from crdetect.cli import main; "


def test_detection_runs_without_torch_and_never_imports_it(tmp_path):
    script = WITHOUT_TORCH + (f"code = main(['detect', '--sample', '--out-dir', {str(tmp_path)!r}, '-q']); "
                              "assert sys.modules['torch'] is None; sys.exit(code)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    header = fits.getheader(tmp_path / "saao_a8280271_crmask.fits", "CRMASK")
    assert (header["CRBACKND"], header["CRPRECIS"]) == ("openvino", "int8")


@pytest.mark.parametrize("command, extra", [(["train", "--out", "x"], "train"), (["simulate", "--dry-run"], "train"),
                                            (["evaluate", "--out", "x", "--real", "."], "torch"),
                                            (["detect", "--sample", "--backend", "torch"], "torch"),
                                            (["detect", "--sample", "--model", "tunet_3"], "torch")])
def test_commands_that_need_torch_name_the_extra_that_installs_it(tmp_path, command, extra):
    script = WITHOUT_TORCH + f"sys.exit(main({command!r}))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert f"pip install 'crdetect[{extra}]'" in run.stderr and "Traceback" not in run.stderr
