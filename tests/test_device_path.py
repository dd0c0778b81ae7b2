"""The per-frame inference path in torch (statistics, saturation, normalisation, tiling and stitching on the
model's device) against the numpy code it replaced (tests/numpy_reference.py): the same numbers.

The torch-only branches (used on CUDA) are called directly on CPU tensors here, so CI checks them too.
CRDETECT_TEST_DEVICE=cuda runs the same tests on a GPU (the torch branches there, TF32 convolutions)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from numpy_reference import normalise_reference, reference_logits

from crdetect import load_detector
from crdetect.inference.saturation import (
    _plateau_saturation_in_torch,
    _saturated_regions_in_torch,
    component_sizes,
    plateau_saturation,
    saturated_regions,
)
from crdetect.preprocessing import _frame_statistics_in_torch, frame_statistics

DEVICE = torch.device(os.environ.get("CRDETECT_TEST_DEVICE", "cpu"))
# float32 convolutions on a GPU run in TF32 (cuDNN's default): logits agree to about 1e-2 there
LOGIT_TOLERANCE = {"rtol": 1e-4, "atol": 1e-3} if DEVICE.type == "cpu" else {"rtol": 1e-2, "atol": 3e-2}
THRESHOLD_MARGIN = 1e-3 if DEVICE.type == "cpu" else 1e-2


def _on_device(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).to(DEVICE)


def _frame(seed: int = 0, shape=(300, 260)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(1000, 10, shape).astype(np.float32)
    image[rng.random(shape) < 0.01] += 300  # hits
    image[100:106, 50:53] = 60000.0  # a saturated core with a bleed column
    image[80:130, 51] = 60000.0
    image[200, 200] = 60000.0  # a single saturated pixel (a strong hit): not protected
    return image


@pytest.mark.parametrize("case", ["plain", "nan", "ignore", "constant", "one_column"])
def test_frame_statistics_in_torch_equal_numpy(case):
    image = _frame()
    ignore = None
    if case == "nan":
        image[:10] = np.nan
    elif case == "ignore":
        ignore = np.zeros(image.shape, bool)
        ignore[50:150] = True
    elif case == "constant":
        image = np.full((40, 30), 7.0, np.float32)
    elif case == "one_column":
        image = image[:, :1].copy()
    reference = frame_statistics(image, ignore)
    ours = _frame_statistics_in_torch(_on_device(image), None if ignore is None else _on_device(ignore))
    assert ours.sky == pytest.approx(reference.sky, rel=1e-12) and ours.sigma == pytest.approx(reference.sigma, rel=1e-12)


def test_frame_statistics_in_torch_on_a_large_subsampled_frame():
    image = np.random.default_rng(1).normal(500, 5, (1500, 1400)).astype(np.float32)  # > 1 Mpix: subsampled
    image[3, 3] = np.inf
    reference = frame_statistics(image)
    ours = _frame_statistics_in_torch(_on_device(image))
    assert (ours.sky, ours.sigma) == pytest.approx((reference.sky, reference.sigma), rel=1e-12)


def test_saturation_in_torch_equals_numpy():
    image = _frame()
    stats = frame_statistics(image)
    level = plateau_saturation(image, statistics=stats)
    assert level is not None
    assert _plateau_saturation_in_torch(_on_device(image), stats, 0.01, 5, 50.0) == level
    empty = np.random.default_rng(2).normal(1000, 10, (64, 64)).astype(np.float32)
    assert _plateau_saturation_in_torch(_on_device(empty), frame_statistics(empty), 0.01, 5, 50.0) is None
    for saturation in (level, 59000.0, None):
        reference = saturated_regions(image, saturation)
        ours = _saturated_regions_in_torch(_on_device(image), saturation, 5).cpu().numpy()
        np.testing.assert_array_equal(ours, reference)
    assert not saturated_regions(image, 59000.0)[200, 200]  # the lone saturated pixel stays flaggable


def test_component_sizes_of_a_pixel_list_equal_image_labelling():
    from scipy import ndimage

    rng = np.random.default_rng(4)
    for _ in range(40):
        image = rng.random((rng.integers(1, 50), rng.integers(1, 50))) < rng.random() * 0.6
        labels, _ = ndimage.label(image, np.ones((3, 3), bool))
        ys, xs = np.nonzero(image)
        np.testing.assert_array_equal(component_sizes(ys, xs), np.bincount(labels.ravel())[labels[ys, xs]])


@pytest.mark.parametrize("tile", [None, 128])
def test_predict_equals_the_numpy_reference_path(tile):
    detector = load_detector("default", device=DEVICE.type, backend="torch", precision="float32")
    image = _frame(3, (333, 290))
    image[5, 7] = np.nan
    mask = np.zeros(image.shape, bool)
    mask[40:44, 60:90] = True
    result = detector.predict(image, tile=tile, batch_size=3, mask=mask, saturation=50000.0)
    working = np.where(mask, np.float32(np.nan), image)
    stats = frame_statistics(working)
    assert (result.statistics.sky, result.statistics.sigma) == pytest.approx((stats.sky, stats.sigma), rel=1e-12)
    normalised = normalise_reference(detector.preprocessing, working, stats)
    logits = reference_logits(detector, normalised, tile, detector.margin(), 3)
    never = ~np.isfinite(working) | saturated_regions(working, 50000.0)
    finite = ~never
    np.testing.assert_allclose(result.logits[finite], logits[finite], **LOGIT_TOLERANCE)
    assert np.all(result.logits[never] == -np.inf) and not result.mask[never].any()
    probability = 1 / (1 + np.exp(-logits[finite].astype(np.float64)))
    decided = np.abs(probability - detector.threshold) > THRESHOLD_MARGIN  # away from the threshold the masks agree exactly
    np.testing.assert_array_equal(result.mask[finite][decided], (probability >= detector.threshold)[decided])


def test_predict_on_a_real_frame_equals_the_numpy_reference_path(shared_data):
    from astropy.io import fits

    with fits.open(shared_data / "real" / "b7_ctio_mosaic2_galsim" / "tpv.fits") as hdul:  # star field, plateaus
        image = np.asarray(hdul[0].data, np.float32)[:768, :768].copy()
    # the network's path, not the veto's
    detector = load_detector("fast", device=DEVICE.type, source_veto=False, backend="torch", precision="float32")
    result = detector.predict(image, tile=256)
    stats = frame_statistics(image)
    logits = reference_logits(detector, normalise_reference(detector.preprocessing, image, stats), 256,
                              detector.margin(), 2)
    protected = saturated_regions(image, plateau_saturation(image, statistics=stats))
    np.testing.assert_array_equal(result.protected, protected)
    assert protected.any()  # the crop holds saturated stars
    np.testing.assert_allclose(result.logits[~protected], logits[~protected], **LOGIT_TOLERANCE)
