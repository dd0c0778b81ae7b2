"""The torch training data path against the numpy reference (tests/numpy_reference.py): same normalisation
to float tolerance, statistically the same augmentations, reproducible for a seed."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from numpy_reference import PatchDataset, local_background_reference, normalise_reference

from crdetect.background import local_background_torch
from crdetect.data.augment import AugmentSettings, BatchAugmenter, PatchSplit, batch_generator
from crdetect.data.patches import PatchWriter
from crdetect.preprocessing import FrameStatistics, Preprocessing

SKY, GAIN = 400.0, 2.0
SIGMA = float(np.sqrt(SKY / GAIN + 25.0))
# CRDETECT_TEST_DEVICE=cuda runs the batch path on a GPU (on a machine that has one; CI: the CPU)
CPU = torch.device(os.environ.get("CRDETECT_TEST_DEVICE", "cpu"))
#: The network's input is the raw image: augmentations can be compared in ADU.
RAW = Preprocessing(subtract_sky=False, scale="fixed", fixed_scale=1.0, asinh_softening=None)


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """96 patches of flat sky with Gaussian noise, no hits (a split file in the benchmark's layout)."""
    path = tmp_path_factory.mktemp("flat") / "flat.h5"
    n = 96
    images = (SKY + np.random.default_rng(0).normal(0, SIGMA, (n, 256, 256))).astype(np.float32)
    zeros = np.zeros((n, 256, 256), np.uint8)
    writer = PatchWriter(path, n)
    writer.add(images, zeros, zeros, zeros + 10, {
        "band": "r", "kind": "flat", "exposure_s": 1.0, "seeing_arcsec": 1.0, "gain": GAIN, "read_noise": 5.0,
        "sky_adu": SKY, "frame_sky": SKY, "frame_sigma": SIGMA, "frame_id": 0, "y0": 0, "x0": 0})
    writer.close()
    return path, images


def _torch_path(path, settings: AugmentSettings, train: bool, seed: int = 0, preprocessing=RAW):
    split = PatchSplit.load(path, need_weight=True)
    augmenter = BatchAugmenter(settings, preprocessing, CPU)
    images, masks, weights = [], [], []
    for number, indices in enumerate(split.batches(16, shuffle=False)):
        out = augmenter(split.batch(indices, CPU), batch_generator(CPU, seed, 0, number), train)
        images.append(out["x"][:, 0].cpu().numpy())
        masks.append(out["mask"][:, 0].cpu().numpy())
        weights.append(out["weight"][:, 0].cpu().numpy())
    return np.concatenate(images), np.concatenate(masks), np.concatenate(weights)


def _reference_path(path, train: bool, seed: int = 0, **options):
    dataset = PatchDataset(path, RAW, augment=train, seed=seed, **options)
    items = [dataset[i] for i in range(len(dataset))]
    return np.stack([i["image"][0].numpy() for i in items]), np.stack([i["mask"][0].numpy() for i in items])


@pytest.mark.parametrize("shape", [(128, 128), (100, 77), (5, 4)])
@pytest.mark.parametrize("window", [3, 9, 21])
def test_local_background_in_torch_equals_the_numpy_reference(shape, window):
    image = np.random.default_rng(1).normal(100, 5, shape).astype(np.float32)
    image[1:4, 1:3] += 500  # a bright source
    reference = local_background_reference(image, window)
    ours = local_background_torch(torch.from_numpy(image)[None, None].to(CPU), window)[0, 0].cpu().numpy()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)


def test_batch_normalisation_equals_the_numpy_reference():
    rng = np.random.default_rng(2)
    images = rng.normal(100, 5, (3, 64, 80)).astype(np.float32)
    images[0, 3, 3], images[1, 10, 10], images[2, 0, 0] = np.nan, np.inf, 1e38
    stats = [FrameStatistics(100.0 + i, 5.0 - i) for i in range(3)]
    for preprocessing in (Preprocessing(), Preprocessing(local_background=21),
                          Preprocessing(scale="fixed", fixed_scale=7.0, asinh_softening=None)):
        reference = np.stack([normalise_reference(preprocessing, image, s) for image, s in zip(images, stats)])
        ours = preprocessing.normalise_batch(torch.from_numpy(images)[:, None].to(CPU),
                                             torch.tensor([s.sky for s in stats], device=CPU),
                                             torch.tensor([s.sigma for s in stats], device=CPU))[:, 0].cpu().numpy()
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_added_sky_has_the_reference_level_and_poisson_noise(flat):
    path, images = flat
    ours = np.concatenate([_torch_path(path, AugmentSettings(sky_boost=1.0), True, seed)[0] for seed in range(3)])
    reference = np.concatenate([_reference_path(path, True, seed, sky_boost=1.0)[0] for seed in range(3)])
    # extra sky uniform in [0, 1] x sky: mean sky / 2, variance sigma^2 + (sky / 2) / gain on average
    assert ours.mean() - SKY == pytest.approx(SKY / 2, rel=0.1)
    assert ours.mean() - SKY == pytest.approx(reference.mean() - SKY, rel=0.1)
    expected_variance = SIGMA**2 + SKY / 2 / GAIN
    assert ours.var(axis=(1, 2)).mean() == pytest.approx(expected_variance, rel=0.05)
    assert ours.var(axis=(1, 2)).mean() == pytest.approx(reference.var(axis=(1, 2)).mean(), rel=0.05)


def test_extra_hits_match_the_reference_in_label_fraction_and_charge(flat):
    path, images = flat
    ours = [_torch_path(path, AugmentSettings(sky_boost=0.0, extra_hits=10.0), False, seed) for seed in range(3)]
    reference = [_reference_path(path, False, seed, extra_hits=10.0) for seed in range(3)]
    our_fraction = np.mean([mask.mean() for _, mask, _ in ours])
    reference_fraction = np.mean([mask.mean() for _, mask in reference])
    assert our_fraction == pytest.approx(reference_fraction, rel=0.25)
    our_charge = np.concatenate([(image - images).sum(axis=(1, 2)) for image, _, _ in ours])
    reference_charge = np.concatenate([(image - images).sum(axis=(1, 2)) for image, _ in reference])
    for q in (25, 50, 75):
        assert np.percentile(our_charge, q) == pytest.approx(np.percentile(reference_charge, q), rel=0.3)
    # the simulator's rule: labelled where the added charge reaches 2 x the pixel's noise
    image, mask, _ = ours[0]
    margin = (image - images) / (2 * np.sqrt(SIGMA**2 + np.clip(images - SKY, 0, None) / GAIN))
    assert margin[mask > 0].min() >= 1 - 1e-4 and margin[mask == 0].max() < 1 + 1e-4
    zoomed = _torch_path(path, AugmentSettings(sky_boost=0.0, extra_hits=10.0, hit_zoom=3.0), False)[1]
    assert zoomed.mean() > 1.5 * ours[0][1].mean()  # magnified footprints cover more pixels


def test_lines_and_pedestals_add_light_but_no_labels_and_raise_the_weight(flat):
    path, images = flat
    image, mask, weight = _torch_path(path, AugmentSettings(sky_boost=0.0, pedestal_prob=0.5, line_prob=0.5), False)
    added = (image - images).sum(axis=(1, 2))
    assert mask.sum() == 0
    assert 20 < np.count_nonzero(added > 100 * SIGMA) < 90  # about 3/4 of the patches get a pedestal or a line
    stored = 10 / 255
    assert np.all(weight >= stored - 1e-6) and weight.max() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["line_prob", "pedestal_prob"])
def test_lines_and_pedestals_carry_the_references_light(flat, kind):
    path, images = flat
    ours = np.concatenate([(_torch_path(path, AugmentSettings(sky_boost=0.0, **{kind: 1.0}), False, seed)[0]
                            - images).sum(axis=(1, 2)) for seed in range(4)])
    reference = np.concatenate([(_reference_path(path, False, seed, **{kind: 1.0})[0] - images).sum(axis=(1, 2))
                                for seed in range(4)])
    for q in (25, 50, 75):  # light spanning six decades: quartiles of 384 patches within a factor 2
        assert np.log10(np.percentile(ours, q)) == pytest.approx(np.log10(np.percentile(reference, q)), abs=0.3)


def test_batches_are_reproducible_for_a_seed_and_differ_between_seeds(flat):
    path, _ = flat
    settings = AugmentSettings(crop=128, pedestal_prob=0.5, line_prob=0.5, extra_hits=3.0, hit_zoom=2.0)
    first, second = (_torch_path(path, settings, True, seed=5) for _ in range(2))
    other = _torch_path(path, settings, True, seed=6)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert first[0].shape == (96, 128, 128)


def test_crops_rotations_and_flips_move_image_and_labels_together(tmp_path):
    """A mask marks exactly the bright pixels of an asymmetric pattern; after augmentation it still does."""
    path = tmp_path / "marked.h5"
    n = 32
    rng = np.random.default_rng(3)
    images = np.full((n, 256, 256), SKY, np.float32)
    masks = (rng.random((n, 256, 256)) < 0.01).astype(np.uint8)
    images[masks > 0] += 1000.0
    writer = PatchWriter(path, n)
    writer.add(images, masks, np.zeros_like(masks), masks * 255, {
        "band": "r", "kind": "flat", "exposure_s": 1.0, "seeing_arcsec": 1.0, "gain": GAIN, "read_noise": 5.0,
        "sky_adu": SKY, "frame_sky": SKY, "frame_sigma": SIGMA, "frame_id": 0, "y0": 0, "x0": 0})
    writer.close()
    image, mask, weight = _torch_path(path, AugmentSettings(crop=96, sky_boost=0.0), True, seed=1)
    np.testing.assert_array_equal(image > SKY + 500, mask > 0)
    np.testing.assert_array_equal(weight, mask)


def test_the_median_weighted_loss_needs_weight_maps(tmp_path):
    from crdetect.data.patches import PATCH

    h5py = pytest.importorskip("h5py")
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        for name, dtype in (("image", "f4"), ("mask", "u1"), ("ignore", "u1")):
            f.create_dataset(name, (1, PATCH, PATCH), dtype)
    with pytest.raises(ValueError, match="no weight map.*rebuild"):
        PatchSplit.load(path, need_weight=True)


def test_on_the_ci_preset_torch_and_reference_label_alike(tmp_path):
    """The shipped models' recipe (extra hits up to 1000x charge, lines, local background) on the ci preset's
    validation-style patches: the same label fraction and input range as the numpy reference."""
    from crdetect.data.simulate import build_benchmark

    build_benchmark(tmp_path, "ci", seed=1, progress=False)
    preprocessing = Preprocessing(local_background=21)
    settings = AugmentSettings(extra_hits=3.0, hit_charge=(0.5, 1000.0), line_prob=0.3)
    ours = [_torch_path(tmp_path / "test.h5", settings, False, seed, preprocessing) for seed in range(4)]
    reference = []
    for seed in range(4):
        dataset = PatchDataset(tmp_path / "test.h5", preprocessing, seed=seed, extra_hits=3.0,
                               hit_charge=(0.5, 1000.0), line_prob=0.3)
        items = [dataset[i] for i in range(len(dataset))]
        reference.append((np.stack([i["image"][0].numpy() for i in items]),
                          np.stack([i["mask"][0].numpy() for i in items])))
    our_fraction = np.mean([mask.mean() for _, mask, _ in ours])
    reference_fraction = np.mean([mask.mean() for _, mask in reference])
    assert our_fraction == pytest.approx(reference_fraction, rel=0.25)
    for q in (1, 50, 90):  # the top percentiles hang on a dozen lines: compared on many patches below
        assert np.percentile(np.concatenate([x for x, _, _ in ours]), q) == pytest.approx(
            np.percentile(np.concatenate([x for x, _ in reference]), q), abs=0.02)
