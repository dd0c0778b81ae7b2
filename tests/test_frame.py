"""Frames (crdetect.frame): what a header says, read once; data sections; overscan never flagged."""

import numpy as np
import pytest
from astropy.io import fits

from crdetect import load_detector
from crdetect.cli import main
from crdetect.frame import data_section


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


# The frame concept (issue #14 item 1) ----------------------------------------------------------------------

def test_frame_reads_what_its_header_says_once():
    from astropy.io import fits

    from crdetect.frame import Frame
    from crdetect.io.reading import ScienceHDU

    header = fits.Header({"GAIN": 2.5, "RDNOISE": 4.0, "SATURATE": 60000.0, "DATASEC": "[1:90,1:40]", "BUNIT": "adu"})
    frame = Frame.from_header(np.zeros((40, 100), np.float32), header)
    assert (frame.gain, frame.read_noise, frame.saturation, frame.unit) == (2.5, 4.0, 60000.0, "adu")
    assert frame.section == (slice(0, 40), slice(0, 90)) and frame.pixels.shape == (40, 90)
    assert Frame.from_header(np.zeros((40, 100)), header, full_frame=True).section is None
    assert frame.with_overrides(saturation=50000.0).saturation == 50000.0
    primary = fits.Header({"GAIN": 1.7, "SATURATE": 30000.0})
    science = ScienceHDU(1, "SCI", np.zeros((8, 8), np.float32), fits.Header({"RDNOISE": 3.0}), primary)
    inherited = Frame.from_science(science)
    assert (inherited.gain, inherited.read_noise, inherited.saturation) == (1.7, 3.0, 30000.0)


def test_predict_on_a_frame_searches_its_data_section_and_honours_its_mask(tiny_checkpoint):
    from crdetect.frame import Frame

    detector = load_detector(tiny_checkpoint, device="cpu")
    rng = np.random.default_rng(4)
    image = rng.normal(1000, 10, (64, 100)).astype(np.float32)
    image[:, 90:] = 500.0  # overscan
    mask = np.zeros(image.shape, bool)
    mask[10:12, 10:30] = True
    frame = Frame(image, section=(slice(0, 64), slice(0, 90)), mask=mask, saturation=1e9)
    result = detector.predict(frame, threshold=0.0)  # threshold 0: every searchable pixel is flagged
    assert not result.mask[:, 90:].any() and np.all(result.probability[:, 90:] == 0)
    assert not result.mask[mask].any() and result.mask[20:, :90].all()
    inner = detector.predict(image[:, :90], mask=mask[:, :90], threshold=0.0)
    np.testing.assert_array_equal(result.probability[:, :90], inner.probability)
    from crdetect.preprocessing import noise_from_detector

    np.testing.assert_allclose(noise_from_detector(np.array([-5.0, 100.0]), 2.0, 4.0),
                               [2.0, np.sqrt(216.0) / 2.0])
