"""Simulation realism basics, CR injection against the real library, benchmark files, datasets."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from numpy_reference import PatchDataset, add_line, add_pedestal
from scipy import ndimage

from crdetect import Preprocessing
from crdetect.background import local_background
from crdetect.data.inject import add_hits, cr_track, inject_crs, load_cr_library
from crdetect.data.simulate import (
    PRESETS,
    DetectorModel,
    SimulationConfig,
    bleed_saturation,
    build_benchmark,
    plan,
    simulate_frame,
)
from crdetect.preprocessing import FrameStatistics, frame_statistics

SMALL = DetectorModel(shape=(512, 512))


def test_library_matches_its_readme(shared_data):
    lib = load_cr_library()
    assert len(lib.footprints) == 1764
    pixels = np.array([(fp > 0).sum() for fp in lib.footprints])
    charge = np.array([fp.sum() for fp in lib.footprints])
    assert np.median(pixels) == 7 and np.percentile(pixels, 90) == pytest.approx(41, abs=2) and pixels.max() == 299
    assert np.median(charge) == pytest.approx(7.1e3, rel=0.02)
    # the shipped copy is the shared library, byte for byte
    from crdetect.data.inject import LIBRARY_FILE
    assert LIBRARY_FILE.read_bytes() == (shared_data / "cr_library" / "cosmic_rays_itl_2017.fits.gz").read_bytes()


def test_train_and_test_pools_are_disjoint_and_cover_the_library():
    lib = load_cr_library()
    train, test = lib.pool("train"), lib.pool("test")
    assert len(train.footprints) + len(test.footprints) == len(lib.footprints)
    train_ids = {id(fp) for fp in train.footprints}
    assert not train_ids & {id(fp) for fp in test.footprints}
    assert train.rate_per_px_s == pytest.approx(lib.rate_per_px_s) == pytest.approx(test.rate_per_px_s)


def test_injected_hits_follow_the_library_rate_and_charge():
    lib = load_cr_library()
    rng = np.random.default_rng(0)
    image = np.zeros((2048, 2048), np.float32)
    charge, n_hits = inject_crs(image, 1000.0, rng, lib)
    expected = lib.rate_per_px_s * image.size * 1000.0  # about 303 hits
    assert abs(n_hits - expected) < 4 * np.sqrt(expected)
    mean_charge = np.mean([fp.sum() for fp in lib.footprints])
    assert charge.sum() / n_hits == pytest.approx(mean_charge, rel=0.2)  # hits on edges lose some charge
    np.testing.assert_array_equal(image, charge)


def test_tracks_carry_charge_along_their_length():
    track = cr_track(30.0, 0.0, 1000.0)
    assert track.shape == (1, 30) and track.sum() == pytest.approx(30_000, rel=1e-3)


def test_noise_matches_gain_and_read_noise_within_5_percent():
    config = SimulationConfig(detector=SMALL, stars_per_mpix=0, galaxies_per_mpix=0, bad_columns=(0, 0),
                              hot_pixels_per_mpix=0, cr_rate_scale=0)
    for band, seed in (("g", 1), ("z", 2)):
        frame = simulate_frame(np.random.default_rng(seed), config, band, load_cr_library())
        expected = np.sqrt(frame.sky_adu * frame.gain + frame.read_noise**2) / frame.gain
        assert np.std(frame.image) == pytest.approx(expected, rel=0.05)
        assert np.mean(frame.image) == pytest.approx(frame.sky_adu, rel=0.01)


def test_saturated_stars_bleed_and_are_never_labelled_cr():
    config = SimulationConfig(detector=SMALL, stars_per_mpix=400, star_mag=(10.0, 13.0), cr_rate_scale=50)
    frame = simulate_frame(np.random.default_rng(3), config, "r", load_cr_library())
    assert frame.saturated.sum() > 100
    assert not (frame.cr_mask & frame.saturated).any()
    assert frame.cr_mask.sum() > 100
    assert not (frame.cr_mask & frame.ignore).any()
    # bleed trails run along columns: saturated runs are taller than wide
    ys, xs = np.nonzero(frame.saturated)
    assert np.ptp(ys) > 0


def test_bleeding_conserves_charge_inside_the_column():
    column = np.zeros((50, 1))
    column[25] = 5.5
    saturated = bleed_saturation(column, 1.0)
    assert column.sum() == pytest.approx(5.5) and column.max() == pytest.approx(1.0)
    assert saturated[:, 0].sum() == 5


def test_presets_have_the_study_counts():
    assert PRESETS["paper"].counts() == {"train": 23040, "val": 2560, "test": 7168}
    assert "23040 train, 2560 validation, 7168 test patches" in plan("paper")


@pytest.fixture(scope="module")
def ci_benchmark(tmp_path_factory):
    out = tmp_path_factory.mktemp("ci_data")
    counts = build_benchmark(out, "ci", seed=7, progress=False)
    return out, counts


def test_ci_benchmark_files(ci_benchmark):
    out, counts = ci_benchmark
    assert counts == PRESETS["ci"].counts() == {"train": 14, "val": 2, "test": 16}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 7 and meta["crdetect_version"]
    with h5py.File(out / "train.h5") as f:
        assert f["image"].dtype == np.float32 and f["image"].shape[1:] == (256, 256)
        assert f["mask"].dtype == np.uint8 and f["ignore"].dtype == np.uint8
        assert set(f["meta"]) >= {"band", "exposure_s", "gain", "read_noise", "sky_adu", "frame_sky", "frame_sigma"}
        assert f["mask"][:].sum() > 0


def test_benchmark_is_deterministic_for_a_seed(ci_benchmark, tmp_path):
    out, _ = ci_benchmark
    build_benchmark(tmp_path, "ci", seed=7, progress=False)
    with h5py.File(out / "test.h5") as a, h5py.File(tmp_path / "test.h5") as b:
        np.testing.assert_array_equal(a["image"][:], b["image"][:])
        np.testing.assert_array_equal(a["mask"][:], b["mask"][:])


def test_dataset_normalises_like_inference_and_augments(ci_benchmark):
    out, _ = ci_benchmark
    pre = Preprocessing()
    plain = PatchDataset(out / "test.h5", pre)
    item = plain[0]
    assert item["image"].shape == (1, 256, 256) and item["mask"].dtype == torch.float32
    with h5py.File(out / "test.h5") as f:
        stats = FrameStatistics(float(f["meta/frame_sky"][0]), float(f["meta/frame_sigma"][0]))
        np.testing.assert_allclose(item["image"][0].numpy(), pre.normalise(f["image"][0], stats), atol=1e-6)
    augmented = PatchDataset(out / "test.h5", pre, augment=True, crop=128, seed=1)
    a, b = augmented[0], augmented[0]
    assert a["image"].shape == (1, 128, 128)
    torch.testing.assert_close(a["image"], b["image"])  # same (seed, epoch, index): same augmentation
    augmented.epoch = 1
    assert not torch.equal(augmented[0]["image"], a["image"])


def test_pedestal_is_a_smooth_bright_blob_with_poisson_noise_and_keeps_labels(ci_benchmark):
    rng = np.random.default_rng(3)
    sigma, gain = 5.0, 2.0
    flat = np.zeros((128, 128), np.float32)
    blobs = [add_pedestal(flat, rng, sigma, gain, (100.0, 100.0)) for _ in range(20)]
    peaks = np.array([b.max() for b in blobs])
    assert all(b.min() >= 0 and b.dtype == np.float32 for b in blobs)
    # every blob that peaks on the patch reaches about 100 sigma (plus its own Poisson noise)
    on_patch = peaks > 50 * sigma
    assert on_patch.sum() >= 5 and np.all(peaks[on_patch] < 100 * sigma + 6 * np.sqrt(100 * sigma / gain) + 1)
    # Poisson: the scatter of the blob's pixels about their smooth mean follows signal / gain
    big = blobs[int(np.argmax(peaks))]
    from scipy import ndimage

    smooth = ndimage.uniform_filter(big.astype(np.float64), 5)
    bright = smooth > 50 * sigma
    residual = (big - smooth)[bright] / np.sqrt(smooth[bright] / gain)
    assert 0.7 < residual.std() < 1.1
    out, _ = ci_benchmark
    plain = PatchDataset(out / "train.h5", Preprocessing(), augment=True, crop=128, seed=2)
    with_blobs = PatchDataset(out / "train.h5", Preprocessing(), augment=True, crop=128, seed=2, pedestal_prob=1.0)
    # same crop and the same labelled pixels (the blob draws change only the later rotation/flip)
    first = next(i for i in range(len(plain)) if plain[i]["mask"].sum() > 0)
    assert with_blobs[first]["mask"].sum() == plain[first]["mask"].sum() > 0
    assert with_blobs[first]["image"].sum() > plain[first]["image"].sum()


def test_extra_hits_are_labelled_like_the_simulator_and_magnified():
    sigma, gain, sky = 4.0, 2.0, 100.0
    image = np.full((128, 128), sky, np.float32)
    mask = np.zeros_like(image)
    ignore = np.zeros_like(image)
    ignore[:, :8] = 1
    out, labels = add_hits(image, mask, ignore, np.random.default_rng(0), sky, sigma, gain, 20.0)
    added = out - image
    assert labels.sum() > 50 and not labels[:, :8].any()  # ignored pixels are never labelled
    np.testing.assert_array_equal(labels[:, 8:] > 0, added[:, 8:] >= 2 * sigma)
    assert mask.sum() == 0 and np.all(image == sky)  # inputs untouched
    zoomed, zoomed_labels = add_hits(image, mask, ignore, np.random.default_rng(0), sky, sigma, gain, 20.0, zoom_max=3.0)
    assert zoomed_labels.sum() > 1.5 * labels.sum()  # magnified footprints cover more pixels
    # the same draws with a 20x larger charge factor: the hits' total charge scales by 20 exactly
    brighter, _ = add_hits(image, mask, ignore, np.random.default_rng(0), sky, sigma, gain, 20.0,
                           charge_scale=(10.0, 1000.0))
    assert (brighter - image).sum() == pytest.approx(20 * added.sum(), rel=1e-4)


def test_frame_statistics_ignore_sources_and_gradients():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:400, :400]
    galaxy = 500 * np.exp(-((x - 200) ** 2 + (y - 200) ** 2) / (2 * 80.0**2))
    stats = frame_statistics(100 + galaxy + rng.normal(0, 4, (400, 400)))
    assert stats.sigma == pytest.approx(4, rel=0.05)


def _galaxy_star_and_hit(seed=0):
    """Sky 100 + a bright galaxy core (5000 ADU, sigma 15 px), a star (FWHM 3 px) and a 1 x 6 px
    hit on the core; noise sigma 4."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:200, :240]
    galaxy = 5000 * np.exp(-((x - 120) ** 2 + (y - 100) ** 2) / (2 * 15.0**2))
    star = 800 * np.exp(-((x - 40) ** 2 + (y - 150) ** 2) / (2 * 1.3**2))
    hit = np.zeros_like(galaxy)
    hit[102, 118:124] = 600.0
    return (100 + galaxy + star + hit + rng.normal(0, 4, galaxy.shape)).astype(np.float32), galaxy, star, hit


def test_local_background_follows_galaxy_cores_but_not_stars_or_hits():
    image, galaxy, star, hit = _galaxy_star_and_hit()
    background = local_background(image, 21)
    assert background.shape == image.shape and background.dtype == np.float32
    residual = image - background
    # the hit and the star stay in the residual almost whole, the galaxy core mostly goes
    assert residual[102, 118:124].mean() > 0.8 * 600
    assert residual[150, 40] > 0.8 * 800
    assert np.abs(residual[95:106, 112:129] - hit[95:106, 112:129]).max() < 0.25 * galaxy.max()
    # close to an exact (slow) sliding median of the same window away from the edges
    exact = ndimage.median_filter(image, size=21)
    assert np.median(np.abs(background - exact)[20:-20, 20:-20]) < 2.0


def test_local_background_input_gives_a_hit_on_a_core_more_contrast():
    """The point of ``local_background``: after a global sky subtraction and the asinh stretch, a hit on a
    bright core is a small bump (0.12 in asinh units against 3.4 on sky); after the local one it has 5x
    that contrast (a 21 px median does not follow the top of a core 35 px wide, so not the full 3.4)."""
    image, galaxy, star, hit = _galaxy_star_and_hit()
    stats = FrameStatistics(sky=100.0, sigma=4.0)
    without_hit = image - hit.astype(np.float32)

    def core_contrast(pre):
        return float(pre.normalise(image, stats)[102, 118:124].mean() - pre.normalise(without_hit, stats)[102, 118:124].mean())

    on_global, on_local = core_contrast(Preprocessing()), core_contrast(Preprocessing(local_background=21))
    assert on_global < 0.2 and on_local > 3 * on_global


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 700), (10, 13)])
def test_local_background_of_tiny_frames_and_nonfinite_pixels(shape):
    image = np.full(shape, 50.0, np.float32)
    image.flat[0] = np.nan
    background = local_background(image, 21, fill=50.0)
    assert background.shape == shape
    np.testing.assert_allclose(background, 50.0)


def test_preprocessing_without_local_background_key_reads_old_checkpoints():
    old = {"subtract_sky": True, "scale": "noise", "fixed_scale": 1.0, "asinh_softening": 10.0}
    assert Preprocessing.from_dict(old).local_background is None
    assert Preprocessing.from_dict({**old, "local_background": 21}).local_background == 21
    with pytest.raises(ValueError, match="local_background"):
        Preprocessing(local_background=1)


def test_lines_cross_the_whole_patch_and_are_not_labelled(tmp_path):
    rng = np.random.default_rng(3)
    image = np.full((96, 128), 100.0, np.float32)
    for _ in range(20):
        line = add_line(image, rng, sigma=4.0, gain=2.0, peak_sigma=(50.0, 100.0)) - image
        bright = line > 100  # > 25 sigma: the line's core
        rows, cols = np.nonzero(bright)
        # a line has no ends inside the patch: its core reaches two opposite or adjacent edges
        touches = [rows.min() == 0, rows.max() == 95, cols.min() == 0, cols.max() == 127]
        assert sum(touches) >= 2
    assert np.all(image == 100.0)  # input untouched


def test_injected_real_frames_use_held_out_hits_on_real_backgrounds(shared_data):
    from crdetect.data.real import INJECTION_BACKGROUNDS, injected_frames

    frames = injected_frames(shared_data / "real", seed=0)
    assert [f.name for f in frames] == [f"injected_{b[0]}" for b in INJECTION_BACKGROUNDS]
    for frame in frames:
        assert frame.truth.sum() > 50 and not (frame.truth & frame.ignore).any()
        assert frame.image.shape == frame.truth.shape and np.isfinite(frame.image).all()
    # deterministic per seed, different across seeds
    again = injected_frames(shared_data / "real", seed=0)
    assert all(np.array_equal(a.truth, b.truth) for a, b in zip(frames, again))
    assert not np.array_equal(frames[0].truth, injected_frames(shared_data / "real", seed=1)[0].truth)


def test_simulate_in_parallel_processes_writes_the_same_files(tmp_path):
    """`crdetect simulate --jobs N` (issue #12 item 2): the same patches, labels and metadata for any N."""
    import json

    from crdetect.cli import main

    for jobs in ("1", "2"):
        assert main(["simulate", "--preset", "ci", "--seed", "5", "--out", str(tmp_path / jobs), "--jobs", jobs,
                     "-q"]) == 0
    for name in ("train.h5", "val.h5", "test.h5"):
        with h5py.File(tmp_path / "1" / name) as serial, h5py.File(tmp_path / "2" / name) as parallel:
            keys = []

            def collect(key, keys=keys, serial=serial):
                if isinstance(serial[key], h5py.Dataset):
                    keys.append(key)

            serial.visit(collect)
            assert keys and {"image", "mask", "ignore", "meta/frame_id"} <= set(keys)
            for key in keys:
                np.testing.assert_array_equal(serial[key][()], parallel[key][()], err_msg=f"{name}:{key}")
    meta = [json.loads((tmp_path / jobs / "meta.json").read_text()) for jobs in ("1", "2")]
    assert meta[0] == meta[1]


def test_simulate_mixes_frame_kinds_in_stated_fractions(tmp_path, capsys):
    """`crdetect simulate --kinds` (issue #13 item 1): each frame's kind is drawn and recorded per patch."""
    from crdetect.cli import main

    assert main(["simulate", "--preset", "ci", "--seed", "5", "--out", str(tmp_path / "mix"), "-q",
                 "--kinds", "elongated=0.5,trailed_sharp=0.5"]) == 0
    assert main(["simulate", "--preset", "ci", "--seed", "5", "--out", str(tmp_path / "plain"), "-q"]) == 0
    with h5py.File(tmp_path / "mix" / "test.h5") as mix, h5py.File(tmp_path / "plain" / "test.h5") as plain:
        kinds = {k.decode() for k in mix["meta/kind"][()]}
        assert kinds <= {"elongated", "trailed_sharp"} and kinds
        assert {k.decode() for k in plain["meta/kind"][()]} == {"sidereal"}
        assert not np.array_equal(mix["image"][()], plain["image"][()])
    assert main(["simulate", "--preset", "ci", "--out", str(tmp_path / "bad"), "--kinds", "smeared=0.5"]) == 2
    assert "unknown frame kinds ['smeared']" in capsys.readouterr().err


def test_bright_stars_have_wings_not_hard_edged_stamps():
    """galsim sizes stamps by the fraction of flux they may miss: a bright star's stamp used to end 100 e-
    above zero, a square on the sky. Now every source fades to a few e- per pixel (FFT ringing at 1e-6 of a
    mag-11 star's peak), far below any sky's noise, before its stamp ends."""
    from scipy import ndimage

    from crdetect.data.simulate import DetectorModel, SimulationConfig, render_scene

    config = SimulationConfig(detector=DetectorModel(shape=(512, 512)), star_mag=(11.0, 13.0), stars_per_mpix=20.0,
                              galaxies_per_mpix=0.0)
    signal = render_scene(np.random.default_rng(3), config, "r").signal_e
    assert signal.max() > 1e6  # bright stars are there
    lit = signal > 0
    rim = lit & ~ndimage.binary_erosion(lit, border_value=1)  # lit pixels next to unlit ones
    assert rim.any() and signal[rim].max() < 5.0
