"""Inpainting by hand."""

import numpy as np

from crdetect.pipeline import inpaint_median


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
