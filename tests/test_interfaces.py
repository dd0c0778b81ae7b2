"""Drop-ins for astroscrappy's detect_cosmics and ccdproc's cosmicray_lacosmic (issue #15, items 1-3),
checked against the originals on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.nddata import CCDData, StdDevUncertainty

import crdetect
from crdetect import InputError, cosmicray_crdetect, detect_cosmics, grow_mask, set_dq_flag


@pytest.fixture(scope="module")
def frame():
    """Sky 1000 +- 10 ADU with three bright hits (a track, a blob, a single pixel) and a bright star."""
    rng = np.random.default_rng(5)
    image = rng.normal(1000.0, 10.0, (128, 160)).astype(np.float32)
    image[40, 30:42] += 800.0  # a track
    image[90:92, 100:102] += 1500.0  # a blob
    image[20, 130] += 2000.0  # one pixel
    y, x = np.mgrid[:128, :160]
    image += (5e4 * np.exp(-((y - 70) ** 2 + (x - 60) ** 2) / (2 * 2.0**2))).astype(np.float32)  # a star
    hits = np.zeros(image.shape, bool)
    hits[40, 30:42] = hits[90:92, 100:102] = hits[20, 130] = True
    return image, hits


def test_detect_cosmics_is_called_like_astroscrappy_and_returns_the_same_kinds(frame):
    astroscrappy = pytest.importorskip("astroscrappy")
    image, hits = frame
    before = image.copy()
    inmask = np.zeros(image.shape, bool)
    inmask[90:92, 100:102] = True  # the blob is a known bad pixel group
    kwargs = dict(inmask=inmask, gain=4.0, readnoise=6.0, satlevel=6.5e4, sigclip=4.5, objlim=5.0, niter=4)
    theirs_mask, theirs_clean = astroscrappy.detect_cosmics(image, **kwargs)
    ours_mask, ours_clean = detect_cosmics(image, **kwargs)
    np.testing.assert_array_equal(image, before)  # the input is never modified
    assert ours_mask.dtype == theirs_mask.dtype == bool and ours_mask.shape == theirs_mask.shape == image.shape
    assert ours_clean.shape == theirs_clean.shape and ours_clean.dtype.kind == "f"
    assert not ours_mask[inmask].any() and not theirs_mask[inmask].any()  # input masks honoured by both
    for mask, cleaned in ((ours_mask, ours_clean), (theirs_mask, theirs_clean)):
        assert mask[40, 30:42].mean() > 0.8 and mask[20, 130]  # both find the track and the single pixel
        assert not mask[66:75, 56:65].any()  # neither flags the star
        np.testing.assert_allclose(cleaned[~mask], image[~mask], rtol=1e-6)  # only flagged pixels change
        assert np.abs(cleaned[40, 30:42] - 1000).max() < 60  # in the input's units
    crmask, cleaned, probability = detect_cosmics(image, return_probability=True, clean=False, grow=1)
    assert cleaned is None and probability.shape == image.shape and probability[40, 35] > 0.5
    assert crmask[39, 35] and crmask[41, 35]  # grown by a pixel
    with pytest.raises(TypeError, match="unexpected keyword"):
        detect_cosmics(image, sigma_clip=4)  # a typo is not silently ignored


def test_detect_cosmics_matches_the_detector_it_wraps(frame):
    image, _ = frame
    detector = crdetect.load_detector("default")
    mask, _ = detect_cosmics(image, satlevel=None, clean=False)
    np.testing.assert_array_equal(mask, detector.detect(image))
    masked = np.ma.masked_array(image, np.zeros(image.shape, bool))
    masked.mask[40, 30:42] = True
    mask, _ = detect_cosmics(masked, clean=False)
    assert not mask[40, 30:42].any() and mask[20, 130]


def test_cosmicray_crdetect_behaves_like_ccdproc_cosmicray_lacosmic(frame):
    ccdproc = pytest.importorskip("ccdproc")
    image, _ = frame
    own = np.zeros(image.shape, bool)
    own[5:8, 5:8] = True  # an earlier flag that must survive
    ccd = CCDData(image.copy(), unit="adu", mask=own.copy(), meta={"OBJECT": "test"})
    theirs = ccdproc.cosmicray_lacosmic(ccd, gain=1.0, readnoise=6.0, satlevel=6.5e4, gain_apply=False)
    ours = cosmicray_crdetect(ccd, clean=True)
    for result in (theirs, ours):
        assert isinstance(result, CCDData) and result is not ccd
        assert result.mask[own].all()  # other flags are never overwritten
        assert result.mask[40, 30:42].mean() > 0.8 and result.mask[20, 130]
    assert ours.unit == ccd.unit  # ccdproc multiplies it by the gain's unit (electron here); we leave it
    np.testing.assert_array_equal(ccd.mask, own)  # the input is untouched
    np.testing.assert_array_equal(ccd.data, image)
    assert np.abs(ours.data[40, 30:42] - 1000).max() < 60 and ours.data.dtype == image.dtype
    assert ours.meta["OBJECT"] == "test" and ours.meta["CRNPIX"] == int((ours.mask & ~own).sum())
    unclean, probability = cosmicray_crdetect(ccd, return_probability=True)
    np.testing.assert_array_equal(unclean.data, image)  # cleaning is asked for, not imposed
    assert probability.shape == image.shape
    with pytest.raises(InputError, match="takes a CCDData"):
        cosmicray_crdetect(image)


def test_cosmicray_crdetect_takes_its_noise_from_the_uncertainty(frame):
    image, _ = frame
    ccd = CCDData(image, unit="adu", uncertainty=StdDevUncertainty(np.full(image.shape, 10.0)))
    _, probability = cosmicray_crdetect(ccd, return_probability=True)
    reference = crdetect.load_detector("default").predict(
        image, statistics=crdetect.FrameStatistics(sky=crdetect.preprocessing.frame_statistics(image).sky, sigma=10.0))
    np.testing.assert_allclose(probability, reference.probability, atol=1e-6)


def test_grow_mask_and_dq_flags():
    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    assert grow_mask(mask, 1).sum() == 9 and grow_mask(mask, 2).sum() == 25 and grow_mask(mask, 0).sum() == 1
    dq = np.zeros((7, 7), np.int16)
    dq[0, 0] = 4
    flagged = set_dq_flag(dq, grow_mask(mask, 1), 8)
    assert flagged[3, 3] == 8 and flagged[0, 0] == 4 and dq.sum() == 4  # other flags kept, input untouched
    dq[3, 3] = 4
    assert set_dq_flag(dq, mask, 8)[3, 3] == 12
    with pytest.raises(InputError, match="power of two"):
        set_dq_flag(dq, mask, 6)
    with pytest.raises(InputError, match="integer"):
        set_dq_flag(dq.astype(float), mask)


def test_detection_needs_only_the_light_core(tmp_path):
    """With the extras' packages unimportable, detection works and the other commands name the extra."""
    import subprocess
    import sys

    blocked = ("galsim", "h5py", "yaml", "astroscrappy", "matplotlib", "deepCR", "cosmic_conn", "dask", "ccdproc")
    code = f"""
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # importing it now raises ImportError, as when it is not installed
import numpy as np
import crdetect
from crdetect.cli import main
assert main(["detect", "--sample", "--out-dir", {str(tmp_path / "out")!r}, "-q"]) == 0
mask, _ = crdetect.detect_cosmics(np.random.default_rng(0).normal(100, 5, (64, 64)))
sys.exit(main(["simulate", "--preset", "ci", "--out", {str(tmp_path / "sim")!r}, "-q"]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert (tmp_path / "out" / "saao_a8280271_crmask.fits").exists()
    assert "pip install 'crdetect[train]'" in result.stderr and "Traceback" not in result.stderr
