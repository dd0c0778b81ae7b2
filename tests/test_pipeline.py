"""Inpainting by hand."""

import numpy as np

import pytest
from astropy.io import fits

from crdetect.cli import main
from crdetect.data.fits_io import data_section
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


@pytest.mark.parametrize("cards, expected", [
    ({"TRIMSEC": "[17:528,1:520]"}, (slice(0, 520), slice(16, 528))),
    ({"DATASEC": "[ 2: 10, 3:4 ]", "TRIMSEC": "[17:528,1:520]"}, (slice(2, 4), slice(1, 10))),  # DATASEC first
    ({"TRIMSEC": "[25:1048,1:4096]"}, None),  # stale: does not fit the (trimmed) frame
    ({"TRIMSEC": "[1:536,1:520]"}, None),  # the whole frame
    ({"TRIMSEC": "[528:17,1:520]"}, None),  # flipped
    ({"DATASEC": "17:528"}, None),  # malformed
    ({}, None),
])
def test_data_section_from_header(cards, expected):
    assert data_section(fits.Header(cards), (520, 536)) == expected


def test_overscan_of_raw_frames_is_never_flagged(tmp_path):
    """A raw frame whose data end in a sharp step onto overscan, with hits on both sides: only the data
    section is searched; --full-frame searches everything."""
    rng = np.random.default_rng(0)
    image = rng.normal(300.0, 5.0, (200, 240)).astype(np.float32)
    image[:, 200:] = rng.normal(210.0, 3.0, (200, 40))  # overscan: bias only
    image[50, 100:104] += 2000.0  # a hit in the data
    image[120, 220:223] += 2000.0  # a hit in the overscan (not a real photon; an artefact to ignore)
    source = tmp_path / "raw.fits"
    fits.PrimaryHDU(image, header=fits.Header({"TRIMSEC": "[1:200,1:200]"})).writeto(source)
    for extra, overscan_flagged in (([], False), (["--full-frame"], True)):
        out = tmp_path / ("full" if extra else "section")
        assert main(["detect", str(source), "--out-dir", str(out), "-q", *extra]) == 0
        with fits.open(out / "raw_crmask.fits") as hdul:
            mask = hdul["CRMASK"].data.astype(bool)
        assert mask.shape == image.shape and mask[50, 100:104].all()
        assert mask[:, 200:].any() == overscan_flagged
