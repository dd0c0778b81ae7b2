"""Labels from consecutive exposures against the known truth of simulated triplets."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from crdetect.cli import main
from crdetect.data.consecutive import label_stack
from crdetect.data.inject import load_cr_library
from crdetect.data.simulate import DetectorModel, SimulationConfig, expose, render_scene
from crdetect.errors import InputError

CONFIG = SimulationConfig(detector=DetectorModel(shape=(1024, 1024)), cr_rate_scale=6)


def _triplet(seed: int):
    scene = render_scene(np.random.default_rng(seed), CONFIG, "r")
    library = load_cr_library().pool("test")
    # same field and detector defects, independent noise and cosmic rays
    return [expose(scene, np.random.default_rng([seed, i]), CONFIG, library, defect_rng=np.random.default_rng(seed))
            for i in range(3)]


@pytest.fixture(scope="module")
def triplet():
    return _triplet(11)


def test_recall_and_false_label_rate_on_simulated_triplets(triplet):
    labels = label_stack([f.image for f in triplet], gain=4.0, read_noise=6.0)
    tp = fn = fp = negatives = 0
    for frame, label in zip(triplet, labels.frames):
        valid = ~label.ignore & ~frame.ignore
        tp += int((label.cr_mask & frame.cr_mask & valid).sum())
        fn += int((~label.cr_mask & frame.cr_mask & valid).sum())
        fp += int((label.cr_mask & ~frame.cr_mask & valid).sum())
        negatives += int((~frame.cr_mask & valid).sum())
        assert not label.rejected
        # sources are ignored, and only a small part of the true hits falls on them
        assert (frame.cr_mask & label.ignore).sum() < 0.1 * frame.cr_mask.sum()
    recall, false_rate = tp / (tp + fn), fp / negatives
    print(f"consecutive-exposure labels: recall {recall:.3f}, false-label rate {false_rate:.2e} "
          f"({tp} TP, {fn} FN, {fp} FP over {negatives} negative pixels)")
    assert recall >= 0.9
    assert false_rate <= 1e-5


def test_weight_map_is_high_on_sources(triplet):
    labels = label_stack([f.image for f in triplet], gain=4.0, read_noise=6.0)
    w = labels.weight
    assert w.min() >= 0 and w.max() == pytest.approx(1.0)
    bright = labels.median > np.percentile(labels.median, 99.9)
    assert w[bright].mean() > 10 * w.mean()


def test_a_frame_with_a_satellite_trail_is_rejected(triplet):
    images = [f.image.copy() for f in triplet] + [triplet[0].image.copy()]
    yy, xx = np.mgrid[:1024, :1024]
    images[1][np.abs(yy - 0.7 * xx - 100) < 3] += 2000.0  # a satellite crossing the frame
    labels = label_stack(images, gain=4.0, read_noise=6.0)
    assert [f.rejected for f in labels.frames] == [False, True, False, False]


def test_needs_three_frames():
    with pytest.raises(InputError, match="at least 3 frames"):
        label_stack([np.zeros((4, 4))] * 2, 1.0, 1.0)


def test_cli_label_reads_gain_and_read_noise_from_headers(triplet, tmp_path, capsys):
    paths = []
    for i, frame in enumerate(triplet):
        header = fits.Header({"GAIN": 4.0, "RDNOISE": 6.0})
        paths.append(tmp_path / f"exp{i}.fits")
        fits.PrimaryHDU(frame.image, header=header).writeto(paths[-1])
    assert main(["label", *map(str, paths), "--out", str(tmp_path / "labels")]) == 0
    with fits.open(tmp_path / "labels" / "exp0_crlabel.fits") as hdul:
        assert hdul["CRMASK"].data.sum() > 0 and hdul["IGNORE"].data.dtype == np.uint8
    assert (tmp_path / "labels" / "median_stack.fits").exists()
    fits.PrimaryHDU(triplet[0].image).writeto(tmp_path / "nogain.fits")
    assert main(["label", str(tmp_path / "nogain.fits"), *map(str, paths[1:]), "--out", str(tmp_path / "x")]) == 2
    assert "no gain in the header" in capsys.readouterr().err


def test_label_writes_a_training_set_with_the_median_weight(triplet, tmp_path):
    h5py = pytest.importorskip("h5py")
    paths = []
    for i, frame in enumerate(triplet):
        paths.append(tmp_path / f"exp{i}.fits")
        fits.PrimaryHDU(frame.image, header=fits.Header({"GAIN": 4.0, "RDNOISE": 6.0})).writeto(paths[-1])
    assert main(["label", *map(str, paths), "--out", str(tmp_path / "labels"), "--training-set",
                 str(tmp_path / "set")]) == 0
    with h5py.File(tmp_path / "set" / "train.h5") as train, h5py.File(tmp_path / "set" / "val.h5") as val:
        assert train["image"].shape[0] + val["image"].shape[0] == 3 * 16  # 16 patches per 1024 x 1024 exposure
        assert val["image"].shape[0] == 4
        weight = train["weight"][:]
        assert weight.max() == 255 and train["mask"][:].sum() > 0
        assert float(train["meta/gain"][0]) == 4.0
    with fits.open(tmp_path / "labels" / "median_stack.fits") as stack:
        first = np.round(np.clip(stack["WEIGHT"].data[:256, :256], 0, 1) * 255)
    np.testing.assert_array_equal(weight[0], first)
