"""The network's runtimes (crdetect.inference.backends, issue #26): OpenVINO gives torch's logits, any tile size,
and the output header says which ran."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

import crdetect
from crdetect.cli import main
from crdetect.inference.backends import openvino_available, resolve_backend

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (crdetect[openvino])")


def _frame(shape=(300, 340), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 10.0, shape).astype(np.float32)
    image[rng.integers(0, shape[0], 60), rng.integers(0, shape[1], 60)] += 800.0
    return image


@needs_openvino
@pytest.mark.parametrize("name", ["default", "tunet_4"])
def test_openvino_gives_torchs_logits_whole_and_tiled(name):
    image = _frame()
    torch_run = crdetect.load_detector(name, device="cpu", backend="torch", source_veto=False)
    openvino_run = crdetect.load_detector(name, device="cpu", backend="openvino", source_veto=False)
    assert openvino_run.backend == "openvino"
    for tile in (None, 128):
        a, b = torch_run.predict(image, tile=tile), openvino_run.predict(image, tile=tile)
        finite = np.isfinite(a.logits)
        np.testing.assert_allclose(b.logits[finite], a.logits[finite], atol=1e-3)
        np.testing.assert_array_equal(b.mask, a.mask)


@needs_openvino
def test_the_header_records_the_runtime(tmp_path):
    fits.PrimaryHDU(_frame()).writeto(tmp_path / "f.fits")
    for backend in ("torch", "openvino"):
        assert main(["detect", str(tmp_path / "f.fits"), "--backend", backend, "--precision", "float32",
                     "--out-dir", str(tmp_path / backend), "-q"]) == 0
        assert fits.getheader(tmp_path / backend / "f_crmask.fits", "CRMASK")["CRBACKND"] == backend
    np.testing.assert_array_equal(fits.getdata(tmp_path / "torch" / "f_crmask.fits", "CRMASK"),
                                  fits.getdata(tmp_path / "openvino" / "f_crmask.fits", "CRMASK"))


def test_backend_choices_are_checked():
    import torch

    cpu = torch.device("cpu")
    with pytest.raises(crdetect.InputError, match="unknown backend 'tensorrt'"):
        resolve_backend("tensorrt", cpu, "float32")
    assert resolve_backend("torch", cpu, "bfloat16") == "torch"
    assert resolve_backend("auto", cpu, "bfloat16") == "torch"  # OpenVINO runs float32 only
    if openvino_available():
        with pytest.raises(crdetect.InputError, match="runs float32 on the CPU"):
            resolve_backend("openvino", cpu, "bfloat16")
    else:
        with pytest.raises(crdetect.InputError, match=r"pip install 'crdetect\[openvino\]'"):
            resolve_backend("openvino", cpu, "float32")
