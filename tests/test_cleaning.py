"""Cleaning (crdetect.cleaning): the hits filled from their neighbours, by hand-checkable cases and against the
reference maskfill implementation; the inpainting benchmark on a frame with known truth (issue #30)."""

import numpy as np
import pytest

from crdetect.cleaning import inpaint_median


def test_inpaint_uses_the_median_of_unflagged_neighbours():
    image = np.arange(49, dtype=np.float32).reshape(7, 7)
    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    image[3, 3] = 1e6
    cleaned = inpaint_median(image, mask)
    window = np.delete(np.arange(49, dtype=np.float32).reshape(7, 7)[1:6, 1:6].ravel(), 12)
    assert cleaned[3, 3] == np.median(window)
    assert np.array_equal(cleaned[~mask], image[~mask])


def test_inpaint_fills_large_masked_regions_and_nans():
    image = np.ones((20, 20), np.float32)
    mask = np.zeros((20, 20), bool)
    mask[2:15, 2:15] = True
    image[mask] = 50
    image[18, 18] = np.nan
    cleaned = inpaint_median(image, mask)
    assert np.isfinite(cleaned).all() and np.allclose(cleaned, 1.0)


def test_inpaint_everything_masked_is_a_no_op_and_memory_bounded():
    image = np.random.default_rng(0).normal(size=(300, 300)).astype(np.float32)
    np.testing.assert_array_equal(inpaint_median(image, np.ones_like(image, bool)), image)
    mask = np.ones_like(image, bool)
    mask[0, 0] = False  # one good pixel fills a 300 x 300 hole
    assert np.allclose(inpaint_median(image, mask), image[0, 0])


def test_maskfill_restores_a_smooth_field_to_the_noise_and_fills_edges_nans_and_whole_masks():
    from crdetect import inpaint

    rng = np.random.default_rng(3)
    y, x = np.mgrid[:80, :100]
    field = 500.0 + 0.3 * x - 0.2 * y + 0.002 * (x - 50) ** 2  # smooth: a gradient and a curvature
    image = (field + rng.normal(0, 1.0, field.shape)).astype(np.float32)
    mask = np.zeros(field.shape, bool)
    mask[30:34, 40:45] = True  # a blob
    mask[0:3, 0:4] = True  # at the corner
    mask[:, 99] = True  # a whole edge column
    image[mask] = 1e5
    image[50, 50] = np.nan
    filled = inpaint(image, mask)
    error = (filled - field)[mask]
    assert np.abs(error).max() < 3.0 and abs(error.mean()) < 0.5  # the noise is 1: filled to the noise
    assert np.isfinite(filled).all() and abs(filled[50, 50] - field[50, 50]) < 4
    np.testing.assert_array_equal(filled[~mask & np.isfinite(image)], image[~mask & np.isfinite(image)])
    everything = np.ones(field.shape, bool)
    np.testing.assert_array_equal(inpaint(image, everything), np.array(image, np.float32))  # nothing to fill from


def test_maskfill_never_fills_from_excluded_pixels_and_equals_the_reference_implementation():
    from crdetect import inpaint
    from crdetect.cleaning import inpaint_maskfill

    rng = np.random.default_rng(4)
    image = rng.normal(100.0, 5.0, (60, 60)).astype(np.float32)
    mask = rng.random(image.shape) < 0.05
    exclude = np.zeros(image.shape, bool)
    exclude[20:40, 20] = True
    image[exclude] = 1e6  # a bad column: must not leak into its neighbours' fills
    filled = inpaint(image, mask & ~exclude, exclude=exclude)
    assert filled[mask & ~exclude].max() < 200
    np.testing.assert_array_equal(filled[exclude], image[exclude])
    with pytest.raises(crdetect_InputError(), match="unknown inpainting method 'biharmonic'"):
        inpaint(image, mask, method="biharmonic")
    maskfill = pytest.importorskip("maskfill")
    reference, _ = maskfill.maskfill(np.asarray(image, np.float64), mask)  # van Dokkum & Pasha's own code
    np.testing.assert_allclose(inpaint_maskfill(image, mask), reference, atol=1e-3)


def crdetect_InputError():
    from crdetect import InputError

    return InputError


def test_inpainting_benchmark_scores_every_method_on_known_truth(tmp_path):
    from crdetect.cleaning import inpaint_median
    from crdetect.evaluation.inpainting import our_methods, run_inpainting_benchmark, write_tables
    from crdetect.frame import LabelledFrame

    rng = np.random.default_rng(5)
    clean = rng.normal(200.0, 5.0, (64, 64)).astype(np.float32)
    truth = np.zeros(clean.shape, bool)
    truth[10:12, 10:20] = truth[40, 30:33] = True
    image = clean.copy()
    image[truth] += 3000.0
    sample = LabelledFrame.of("test", image, truth, np.zeros(clean.shape, bool), 1.0, 5.0, 1e9, clean=clean)
    rows = run_inpainting_benchmark({"synthetic": [sample]}, our_methods(),
                                    {"perfect": lambda s: s.truth, "nothing": lambda s: np.zeros_like(s.truth)},
                                    progress=False)
    by = {(r["method"], r["mask"]): r for r in rows}
    assert set(by) == {(m, k) for m in ("maskfill", "median")
                       for k in ("true CR pixels", "perfect's mask", "nothing's mask")}
    residual = (inpaint_median(image, truth) - clean)[truth] / np.sqrt(25.0 + 0)  # noise 5 on flat sky
    assert by["median", "true CR pixels"]["rms_over_noise"] == pytest.approx(np.sqrt(np.mean(residual**2)), rel=0.1)
    assert by["maskfill", "true CR pixels"]["rms_over_noise"] < 2.0
    assert by["maskfill", "nothing's mask"]["rms_over_noise"] > 100  # the hits were left in
    write_tables(rows, tmp_path)
    assert (tmp_path / "results.csv").read_text().startswith("method,set,mask,pixels,rms_over_noise")
