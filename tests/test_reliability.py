"""Bad and extreme inputs: every one gets a clear error or a documented result, never a half-written file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.io import fits

from crdetect import CRDetector, Preprocessing, create_model
from crdetect.baselines import CosmicCoNNDetector, DeepCRDetector, peer_available
from crdetect.cli import main
from crdetect.frame import Frame
from crdetect.preprocessing import frame_statistics


def test_all_zero_frame_through_the_cli(tiny_checkpoint, tmp_path):
    path = tmp_path / "zeros.fits"
    fits.PrimaryHDU(np.zeros((64, 64), np.float32)).writeto(path)
    assert main(["detect", str(path), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o"), "-q"]) == 0
    with fits.open(tmp_path / "o" / "zeros_crmask.fits") as hdul:
        assert hdul["CRMASK"].data.shape == (64, 64)


def test_nan_region_through_the_cli_is_counted_in_the_header(tiny_checkpoint, tmp_path):
    data = np.random.default_rng(0).normal(100, 5, (64, 64)).astype(np.float32)
    data[10:20, 10:20] = np.nan
    path = tmp_path / "nan.fits"
    fits.PrimaryHDU(data).writeto(path)
    assert main(["detect", str(path), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o"), "-q"]) == 0
    with fits.open(tmp_path / "o" / "nan_crmask.fits") as hdul:
        assert hdul["CRMASK"].header["CRNBAD"] == 100
        assert not hdul["CRMASK"].data[10:20, 10:20].any()


def test_wrong_checkpoint_format_through_the_cli(tmp_path, capsys):
    bare = tmp_path / "weights.pt"
    torch.save(create_model("unet").state_dict(), bare)
    assert main(["detect", "--sample", "--model", str(bare), "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a crdetect checkpoint" in err and "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_4k_frame_tiled_matches_whole_frame_far_from_borders():
    """A 4096 x 4096 frame runs in bounded memory (tiles) and every pixel is predicted."""
    torch.manual_seed(0)
    detector = CRDetector(create_model("deepcr_unet", base_channels=8), Preprocessing(), device="cpu")
    image = np.random.default_rng(0).normal(100, 5, (4096, 4096)).astype(np.float32)
    probability = detector.predict_proba(image, tile=1024)
    assert probability.shape == image.shape and np.isfinite(probability).all()
    crop = image[:600, :600]
    np.testing.assert_allclose(detector.predict_proba(crop, tile=None, statistics=frame_statistics(image))[:500, :500],
                               probability[:500, :500], atol=1e-5)


@pytest.mark.parametrize("peer", [DeepCRDetector, CosmicCoNNDetector])
def test_peers_run_with_their_shipped_weights(peer, shared_data):
    module = {"DeepCRDetector": "deepCR", "CosmicCoNNDetector": "cosmic_conn"}[peer.__name__]
    if not peer_available(module):
        pytest.skip(f"{module} is not installed (pip install 'crdetect[peers]')")
    image = fits.getdata(shared_data / "real" / "b1_hsc_lsst" / "hsc_crs.fits").astype(np.float32)
    score = peer().score(Frame(image, gain=1.0, read_noise=5.0), frame_statistics(image))
    assert score.shape == image.shape and np.isfinite(score).all()
    assert 0 <= score.min() and score.max() <= 1 and (score > 0.5).sum() > 10  # the HSC cutout has obvious CRs
