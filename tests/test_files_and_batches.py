"""Files and batches as astronomers have them (issue #11): every item has a test here that failed before.

Synthetic files are built in the layouts real instruments write: raw uint16 frames (BITPIX 16, BZERO
32768), scaled int16, tile-compressed floats (.fz), raw multi-amplifier files whose primary HDU declares
NAXIS = 2 with zero-length axes, and HST/Gemini-style files with DQ, ERR, VAR and WHT planes.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits

from crdetect import InputError, load_detector
from crdetect.atomic import atomic_output, remove_stale_temporaries, temporary_name
from crdetect.cli import main
from crdetect.io.reading import hdu_role, select_science


def _frame(shape=(96, 128), sky=1000.0, noise=10.0, seed=0):
    return np.random.default_rng(seed).normal(sky, noise, shape)


def _detect(path, checkpoint, out, *extra):
    return main(["detect", str(path), "--model", str(checkpoint), "--out-dir", str(out), "-q", *extra])


def _hdu_bytes(path, index):
    """The bytes (header and data) of HDU ``index`` of a FITS file (decompressed if gzipped)."""
    raw = gzip.decompress(path.read_bytes()) if str(path).endswith(".gz") else path.read_bytes()
    with fits.open(io.BytesIO(raw)) as hdul:
        info = hdul[index].fileinfo()
        return raw[info["hdrLoc"]:info["datLoc"] + info["datSpan"]]


# 1. Copies are bit-exact ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["uint16", "scaled_int16", "float_fz", "uint16_gz"])
def test_input_hdus_are_copied_byte_for_byte(kind, tiny_checkpoint, tmp_path):
    image = _frame()
    if kind in ("uint16", "uint16_gz"):
        hdus = fits.HDUList([fits.PrimaryHDU(image.astype(np.uint16))])  # BITPIX 16, BZERO 32768
    elif kind == "scaled_int16":
        primary = fits.PrimaryHDU(image.astype(np.float32))
        primary.scale("int16", bscale=0.5, bzero=1000.0)
        hdus = fits.HDUList([primary])
    else:
        hdus = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image.astype(np.float32), name="SCI")])
    name = {"uint16": "raw.fits", "scaled_int16": "scaled.fits", "float_fz": "comp.fits.fz",
            "uint16_gz": "raw.fits.gz"}[kind]
    path = tmp_path / name
    if kind == "uint16_gz":
        buffer = io.BytesIO()
        hdus.writeto(buffer)
        path.write_bytes(gzip.compress(buffer.getvalue()))
    else:
        hdus.writeto(path)
    assert _detect(path, tiny_checkpoint, tmp_path / "out") == 0
    out = next((tmp_path / "out").glob("*_crmask.fits"))
    for index in range(len(hdus)):
        assert _hdu_bytes(out, index) == _hdu_bytes(path, index)
    with fits.open(out) as copied, fits.open(path) as original:
        for a, b in zip(copied[:len(hdus)], original, strict=True):
            if b.data is not None:
                assert a.data.dtype == b.data.dtype
                np.testing.assert_array_equal(a.data, b.data)  # uint16 1000 reads back as 1000
        assert copied["CRMASK"].data.shape == image.shape


# 2. Raw multi-amplifier files ------------------------------------------------------------------------------

def _raw_multi_amplifier_file(path, amplifiers=4, shape=(64, 80), read_noise=7.0):
    """A raw file in a common layout: primary NAXIS = 2 with NAXIS1 = NAXIS2 = 0, RDNOISE and SATURATE only
    there; four SCI extensions with their own GAIN, BIASSEC and DATASEC, uint16 with overscan columns."""
    primary = fits.Header()
    primary["SIMPLE"] = True
    primary["BITPIX"] = 16
    primary["NAXIS"] = 2
    primary["NAXIS1"] = 0
    primary["NAXIS2"] = 0
    primary["EXTEND"] = True
    primary["RDNOISE"] = read_noise
    primary["SATURATE"] = 60000.0
    primary["NEXTEND"] = amplifiers
    blob = primary.tostring().encode()
    extensions = []
    for amp in range(1, amplifiers + 1):
        data = _frame(shape, sky=1200.0, noise=8.0, seed=amp)
        data[:, -8:] = np.random.default_rng(amp).normal(1000.0, 3.0, (shape[0], 8))  # overscan
        hdu = fits.ImageHDU(data.astype(np.uint16), name="SCI", ver=amp)
        hdu.header["GAIN"] = 1.5 + 0.1 * amp
        hdu.header["DATASEC"] = f"[1:{shape[1] - 8},1:{shape[0]}]"
        hdu.header["BIASSEC"] = f"[{shape[1] - 7}:{shape[1]},1:{shape[0]}]"
        extensions.append(hdu)
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), *extensions]).writeto(buffer)
    path.write_bytes(blob + buffer.getvalue()[2880:])  # the primary header is one block either way
    return path


def test_raw_multi_amplifier_file_is_searched_on_every_amplifier(tiny_checkpoint, tmp_path):
    path = _raw_multi_amplifier_file(tmp_path / "raw_mef.fits")
    with fits.open(path) as hdul:
        assert hdul[0].header["NAXIS"] == 2 and hdul[0].header["NAXIS1"] == 0
        assert [hdu_role(h) for h in hdul] == ["empty"] + ["science"] * 4
    for extra in ([], ["--hdu", "all"]):
        out = tmp_path / f"out{len(extra)}"
        assert _detect(path, tiny_checkpoint, out, "--noise-from-header", *extra) == 0
        with fits.open(out / "raw_mef_crmask.fits") as hdul:
            masks = [h for h in hdul if h.name == "CRMASK"]
            assert [h.header["CRSCIEXT"] for h in masks] == [1, 2, 3, 4]
            assert [h.ver for h in masks] == [1, 2, 3, 4]
            for amp, mask in enumerate(masks, start=1):
                gain, sky = 1.5 + 0.1 * amp, mask.header["CRSKY"]
                # the read noise comes from the primary header (inherited), the gain from the amplifier
                assert mask.header["CRSIGMA"] == pytest.approx(np.sqrt(sky * gain + 7.0**2) / gain, rel=1e-5)
                assert not mask.data[:, -8:].any()  # overscan (outside DATASEC) is never flagged


def test_one_amplifier_at_a_time_writes_one_output_per_amplifier(tiny_checkpoint, tmp_path):
    path = _raw_multi_amplifier_file(tmp_path / "raw_mef.fits")
    assert _detect(path, tiny_checkpoint, tmp_path / "out", "--hdu", "2") == 0
    assert _detect(path, tiny_checkpoint, tmp_path / "out", "--hdu", "3") == 0
    outputs = sorted(p.name for p in (tmp_path / "out").glob("*.fits"))
    assert outputs == ["raw_mef_hdu2_crmask.fits", "raw_mef_hdu3_crmask.fits"]
    with fits.open(tmp_path / "out" / "raw_mef_hdu3_crmask.fits") as hdul:
        assert [h.header["CRSCIEXT"] for h in hdul if h.name == "CRMASK"] == [3]


def test_extension_can_refuse_to_inherit(tmp_path):
    path = _raw_multi_amplifier_file(tmp_path / "raw_mef.fits")
    from crdetect.io.reading import read_science_hdus

    sciences = read_science_hdus(path)
    assert sciences[0].keywords.get("RDNOISE") == 7.0 and sciences[0].keywords.get("GAIN") == pytest.approx(1.6)
    assert sciences[0].keywords.get("DATASEC") == "[1:72,1:64]"
    header = sciences[0].header.copy()
    header["INHERIT"] = False
    from crdetect.io.reading import InheritedHeader

    assert InheritedHeader(header, sciences[0].primary_header).get("RDNOISE") is None


# 3. Mask and error planes -----------------------------------------------------------------------------------

def _hst_like_file(path, shape=(80, 96)):
    """SCI with its DQ (int16 flags), ERR, VAR and WHT planes, an unnamed uint8 bad-pixel map, a table."""
    image = _frame(shape).astype(np.float32)
    dq = np.zeros(shape, np.int16)
    dq[10:14, 20:60] = 4  # a bad column block
    dq[50, 50] = 16  # a hot pixel
    bpm = np.zeros(shape, np.uint8)
    bpm[70, 5] = 1
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="SCI", ver=1),
                         fits.ImageHDU(np.full(shape, 10, np.float32), name="ERR", ver=1),
                         fits.ImageHDU(dq, name="DQ", ver=1),
                         fits.ImageHDU(np.full(shape, 100, np.float32), name="VAR", ver=1),
                         fits.ImageHDU(np.ones(shape, np.float32), name="WHT", ver=1),
                         fits.ImageHDU(bpm),
                         fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.arange(3.0))])])
    hdus.writeto(path)
    return image, dq


def test_mask_and_error_planes_are_never_searched_and_dq_is_the_input_mask(tiny_checkpoint, tmp_path):
    path = tmp_path / "flt.fits"
    _, dq = _hst_like_file(path)
    with fits.open(path) as hdul:
        assert [hdu_role(h) for h in hdul] == ["empty", "science", "auxiliary", "mask", "auxiliary", "auxiliary",
                                              "mask", "table"]
        assert select_science(hdul)[0].index == 1 and select_science(hdul)[0].mask_index == 3
    for extra in ([], ["--hdu", "all"]):
        out = tmp_path / f"out{len(extra)}"
        # threshold 0 flags every pixel the detector may flag: exactly the unmasked ones
        assert _detect(path, tiny_checkpoint, out, "--threshold", "0", *extra) == 0
        with fits.open(out / "flt_crmask.fits") as hdul:
            masks = [h for h in hdul if h.name == "CRMASK"]
            assert len(masks) == 1 and masks[0].header["CRSCINAM"] == "SCI"
            assert masks[0].header["CRMASKX"] == 3 and masks[0].header["CRNMASK"] == int((dq != 0).sum())
            np.testing.assert_array_equal(masks[0].data, (dq == 0).astype(np.uint8))
    assert _detect(path, tiny_checkpoint, tmp_path / "nomask", "--threshold", "0", "--no-file-mask") == 0
    with fits.open(tmp_path / "nomask" / "flt_crmask.fits") as hdul:
        assert hdul["CRMASK"].data.all()


def test_unnamed_integer_plane_of_mostly_zeros_is_taken_for_a_mask(tiny_checkpoint, tmp_path):
    flags = np.zeros((40, 40), np.int32)
    flags[5, 5] = 2
    path = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(_frame((40, 40)).astype(np.float32)), fits.ImageHDU(flags)]).writeto(path)
    with fits.open(path) as hdul:
        plans = select_science(hdul)
    assert [p.index for p in plans] == [0] and plans[0].mask_index == 1


def test_masked_pixels_stay_out_of_the_noise_estimate(tiny_checkpoint, tmp_path):
    image = _frame((64, 64)).astype(np.float32)
    dq = np.zeros(image.shape, np.int16)
    dq[::2, :] = 1  # half the rows are bad and wildly off
    image[::2, :] = np.random.default_rng(1).normal(3e4, 5e3, (32, 64))
    path = tmp_path / "bad_rows.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="SCI"), fits.ImageHDU(dq, name="DQ")]).writeto(path)
    assert _detect(path, tiny_checkpoint, tmp_path / "out") == 0
    with fits.open(tmp_path / "out" / "bad_rows_crmask.fits") as hdul:
        assert hdul["CRMASK"].header["CRSKY"] == pytest.approx(1000, abs=5)
        assert hdul["CRMASK"].header["CRSIGMA"] == pytest.approx(10, rel=0.15)


# 4. Input masks in the Python API ---------------------------------------------------------------------------

def test_python_api_honours_mask_argument_masked_arrays_and_ccddata(tiny_checkpoint):
    from astropy.nddata import CCDData

    detector = load_detector(tiny_checkpoint, device="cpu")
    image = _frame((64, 64)).astype(np.float32)
    bad = np.zeros(image.shape, bool)
    bad[20:24, :] = True
    image[20:24, :] = 6e4  # a saturated-looking bad block that must not move the statistics
    reference = detector.predict(np.where(bad, np.nan, image), threshold=0.0)
    for result in (detector.predict(image, mask=bad, threshold=0.0),
                   detector.predict(np.ma.masked_array(image, bad), threshold=0.0),
                   detector.predict(CCDData(image, mask=bad, unit="adu"), threshold=0.0)):
        assert not result.mask[bad].any() and result.mask[~bad].all()
        np.testing.assert_array_equal(result.masked, bad)
        assert result.statistics == reference.statistics
        np.testing.assert_allclose(result.logits[~bad], reference.logits[~bad], atol=1e-6)
    assert not detector.detect(image, mask=bad, threshold=0.0)[bad].any()
    assert image[20, 0] == 6e4  # the caller's array is untouched
    with pytest.raises(InputError, match="mask has shape"):
        detector.predict(image, mask=bad[:10])


# 5. Output names ----------------------------------------------------------------------------------------------

def test_same_names_in_different_directories_get_distinct_outputs(tiny_checkpoint, tmp_path, capsys):
    import csv

    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / "in" / folder).mkdir(parents=True)
        fits.PrimaryHDU(_frame((48, 48), seed=seed).astype(np.float32)).writeto(tmp_path / "in" / folder / "frame.fits")
    inputs = [str(tmp_path / "in" / "a" / "frame.fits"), str(tmp_path / "in" / "b" / "frame.fits")]
    common = ["--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "out"), "-q"]
    assert main(["detect", *inputs, *common, "--jobs", "2"]) == 0
    outputs = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.fits"))
    assert outputs == ["a/frame_crmask.fits", "b/frame_crmask.fits"]
    with fits.open(tmp_path / "out" / "a" / "frame_crmask.fits") as a, \
            fits.open(tmp_path / "out" / "b" / "frame_crmask.fits") as b:
        assert not np.array_equal(a[0].data, b[0].data)
    assert main(["detect", *inputs, *common, "--skip-existing"]) == 0
    with open(tmp_path / "out" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["skipped (output exists)"] * 2
    assert all(r["cr_pixels"] != "" and r["shape"] == "48x48" for r in rows)  # the earlier results, kept


def test_inputs_that_would_share_an_output_are_refused_before_any_work(tiny_checkpoint, tmp_path, capsys):
    fits.PrimaryHDU(_frame((32, 32)).astype(np.float32)).writeto(tmp_path / "x.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(_frame((32, 32)).astype(np.float32))]).writeto(
        tmp_path / "x.fits.fz")
    assert main(["detect", str(tmp_path / "x.fits"), str(tmp_path / "x.fits.fz"), "--model", str(tiny_checkpoint),
                 "--out-dir", str(tmp_path / "out")]) == 2
    assert "would both be written to" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# 7. Concurrent writers, 8. the umask -------------------------------------------------------------------------

def test_an_output_created_meanwhile_by_another_process_is_never_replaced(tmp_path):
    from crdetect import OutputError

    target = tmp_path / "out.fits"
    with pytest.raises(OutputError, match="created by another process meanwhile"):
        with atomic_output(target) as handle:
            handle.write(b"ours")
            target.write_bytes(b"theirs")  # another run finished first
    assert target.read_bytes() == b"theirs"
    assert not list(tmp_path.glob(".*.tmp"))
    with atomic_output(target, overwrite=True) as handle:
        handle.write(b"ours")
    assert target.read_bytes() == b"ours"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_and_checkpoints_follow_the_umask(umask, mode, tiny_checkpoint, tmp_path):
    from crdetect import Preprocessing, create_model, save_checkpoint

    fits.PrimaryHDU(_frame((32, 32)).astype(np.float32)).writeto(tmp_path / "f.fits")
    previous = os.umask(umask)
    try:
        assert _detect(tmp_path / "f.fits", tiny_checkpoint, tmp_path / "out") == 0
        checkpoint = save_checkpoint(tmp_path / "m.pt", create_model("deepcr_unet", base_channels=4), Preprocessing())
    finally:
        os.umask(previous)
    for path in (tmp_path / "out" / "f_crmask.fits", tmp_path / "out" / "summary.csv", checkpoint):
        assert path.stat().st_mode & 0o777 == mode, path


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ours = temporary_name(tmp_path / "a_crmask.fits")
    theirs = ours.with_name(ours.name.replace(f"-{os.getpid()}-", f"-{dead.stdout.strip()}-"))
    unrelated = tmp_path / ".notes.tmp"
    for path in (ours, theirs, unrelated):
        path.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == [theirs]
    assert ours.exists() and unrelated.exists()


# 9. Untrained networks, 10. numbers checked up front -------------------------------------------------------

def test_untrained_networks_are_refused_unless_asked_for(tmp_path, capsys, untrained_registry):
    fits.PrimaryHDU(_frame((32, 32)).astype(np.float32)).writeto(tmp_path / "f.fits")
    assert main(["detect", str(tmp_path / "f.fits"), "--model", "unet", "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "without trained weights" in err and "default, fast" in err and "--allow-untrained" in err
    assert not (tmp_path / "o").exists()
    assert main(["detect", str(tmp_path / "f.fits"), "--model", "deepcr_unet", "--allow-untrained", "--out-dir",
                 str(tmp_path / "o"), "-q"]) == 0
    assert main(["detect", str(tmp_path / "f.fits"), "--model", "defualt", "--out-dir", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'default'" in err
    assert err.index("shipped with crdetect: default, fast") < err.index("Untrained registry networks")


@pytest.mark.parametrize("option", [["--threshold", "1.5"], ["--threshold", "-0.2"], ["--threshold", "nan"],
                                    ["--saturation", "nan"], ["--saturation", "0"], ["--gain", "-4"],
                                    ["--read-noise", "inf"], ["--sky", "nan"], ["--tile", "-5"], ["--encoders", "-1"]])
def test_bad_numbers_are_usage_errors(option, tiny_checkpoint, tmp_path):
    fits.PrimaryHDU(_frame((32, 32)).astype(np.float32)).writeto(tmp_path / "f.fits")
    with pytest.raises(SystemExit) as exit_info:
        main(["detect", str(tmp_path / "f.fits"), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path), *option])
    assert exit_info.value.code == 2


def test_a_tile_smaller_than_the_model_margin_is_refused_up_front(tiny_checkpoint, tmp_path, capsys):
    fits.PrimaryHDU(_frame((32, 32)).astype(np.float32)).writeto(tmp_path / "f.fits")
    assert main(["detect", str(tmp_path / "f.fits"), "--model", str(tiny_checkpoint), "--out-dir",
                 str(tmp_path / "o"), "--tile", "16"]) == 2
    err = capsys.readouterr().err
    assert "--tile 16 is too small" in err and "overlap" not in err
    assert not (tmp_path / "o").exists()


def test_python_api_refuses_thresholds_outside_0_1(tiny_checkpoint):
    detector = load_detector(tiny_checkpoint, device="cpu")
    image = _frame((32, 32))
    for bad in (1.5, -0.2, float("nan")):
        with pytest.raises(InputError, match="threshold must be a probability"):
            detector.detect(image, threshold=bad)
        with pytest.raises(InputError, match="threshold must be a probability"):
            load_detector(tiny_checkpoint, device="cpu", threshold=bad)


# 11. EXTVER, 12. truncated files, 13. warnings ---------------------------------------------------------------

def test_masks_of_a_primary_image_are_found_by_the_natural_read(tiny_checkpoint, tmp_path):
    fits.PrimaryHDU(_frame((40, 50)).astype(np.float32)).writeto(tmp_path / "single.fits")
    assert _detect(tmp_path / "single.fits", tiny_checkpoint, tmp_path / "out") == 0
    out = tmp_path / "out" / "single_crmask.fits"
    assert fits.getdata(out, "CRMASK").shape == (40, 50)
    assert fits.getdata(out, "CRPROB").shape == (40, 50)
    assert fits.getheader(out, "CRMASK")["CRSCIEXT"] == 0


def test_a_file_cut_inside_a_later_hdu_fails_before_any_work(tiny_checkpoint, tmp_path, capsys, caplog):
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(_frame((64, 64), seed=i).astype(np.float32), name=f"CCD{i}")
                                        for i in (1, 2, 3)]).writeto(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 9000])  # inside CCD3's data
    assert _detect(path, tiny_checkpoint, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "corrupt or truncated: HDU 3 (CCD3)" in err and "ValueError" not in err
    assert not list((tmp_path / "out").glob("*.fits")) and not list((tmp_path / "out").glob(".*.tmp"))
    # a file missing only the final padding of its last HDU is complete: it is processed
    fits.PrimaryHDU(_frame((30, 30)).astype(np.float32)).writeto(tmp_path / "short.fits")
    raw = (tmp_path / "short.fits").read_bytes()
    (tmp_path / "short.fits").write_bytes(raw[:2880 + 30 * 30 * 4])
    assert _detect(tmp_path / "short.fits", tiny_checkpoint, tmp_path / "out2") == 0


def test_inpaint_run_prints_no_library_warning(tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    fits.PrimaryHDU(_frame((48, 48)).astype(np.float32)).writeto(tmp_path / "f.fits")
    result = subprocess.run([sys.executable, "-W", "default", "-m", "crdetect", "detect", str(tmp_path / "f.fits"),
                             "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o"), "--inpaint", "-q"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(tmp_path / "o" / "f_crmask.fits") as hdul:
            hdul.verify("exception")
            assert hdul["CLEANED"].header["CRINPNT"] == "maskfill"


def test_gmos_real_file_is_copied_byte_for_byte(shared_data, tiny_checkpoint, tmp_path):
    """Gemini GMOS-S cutout (astroscrappy's test data): SCI, VAR and SKYFIT; only SCI is searched."""
    source = shared_data / "real" / "a1_gmos_astroscrappy" / "gmos.fits"
    shutil.copy(source, tmp_path / "gmos.fits")
    assert _detect(tmp_path / "gmos.fits", tiny_checkpoint, tmp_path / "out") == 0
    out = tmp_path / "out" / "gmos_crmask.fits"
    size = (tmp_path / "gmos.fits").stat().st_size
    assert out.read_bytes()[:size] == (tmp_path / "gmos.fits").read_bytes()
    with fits.open(out) as hdul:
        assert [h.name for h in hdul][4:] == ["CRMASK", "CRPROB", "CRVETO"]


def test_grow_option_widens_the_mask_but_never_onto_masked_pixels(tmp_path):
    image = _frame((80, 96)).astype(np.float32)
    image[20, 10:20] += 900.0  # two hits
    image[60:62, 70:72] += 1500.0
    dq = np.zeros(image.shape, np.int16)
    dq[21, 12:16] = 1  # bad pixels beside the first hit
    path = tmp_path / "hits.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="SCI"), fits.ImageHDU(dq, name="DQ")]).writeto(path)
    assert _detect(path, "fast", tmp_path / "a") == 0
    assert _detect(path, "fast", tmp_path / "b", "--grow", "2") == 0
    with fits.open(tmp_path / "a" / "hits_crmask.fits") as a, fits.open(tmp_path / "b" / "hits_crmask.fits") as b:
        plain, grown = a["CRMASK"].data.astype(bool), b["CRMASK"].data.astype(bool)
        assert b["CRMASK"].header["CRGROW"] == 2 and a["CRMASK"].header["CRGROW"] == 0
    from crdetect import grow_mask

    assert plain[20, 11:19].all() and plain[60:62, 70:72].all()
    np.testing.assert_array_equal(grown, grow_mask(plain, 2) & (dq == 0))
    assert grown.sum() > 3 * plain.sum()


def test_a_separate_bad_pixel_mask_keeps_known_hot_pixels_unflagged(tmp_path, capsys):
    """A single frame cannot tell a hot pixel from a one-pixel hit: the detector's mask can (issue #13 item 2)."""
    image = _frame((64, 80)).astype(np.float32)
    hot = [(10, 10), (20, 50), (40, 30)]
    for y, x in hot:
        image[y, x] += 2000.0  # 200 sigma: flagged like a one-pixel hit without the mask
    image[50, 60:66] += np.array([600.0, 900.0, 1400.0, 1100.0, 800.0, 500.0], np.float32)  # a real hit
    fits.PrimaryHDU(image).writeto(tmp_path / "frame.fits")
    bpm = np.zeros(image.shape, np.uint8)
    for y, x in hot:
        bpm[y, x] = 1
    fits.PrimaryHDU(bpm).writeto(tmp_path / "bpm.fits")
    assert _detect(tmp_path / "frame.fits", "fast", tmp_path / "a") == 0
    assert _detect(tmp_path / "frame.fits", "fast", tmp_path / "b", "--bad-pixel-mask", str(tmp_path / "bpm.fits")) == 0
    plain, masked = (fits.getdata(tmp_path / d / "frame_crmask.fits", "CRMASK").astype(bool) for d in ("a", "b"))
    assert all(plain[y, x] for y, x in hot) and not any(masked[y, x] for y, x in hot)
    assert masked[50, 61:65].all()
    assert fits.getheader(tmp_path / "b" / "frame_crmask.fits", "CRMASK")["CRNMASK"] == 3
    fits.PrimaryHDU(bpm[:10]).writeto(tmp_path / "small.fits")
    assert _detect(tmp_path / "frame.fits", "fast", tmp_path / "c", "--bad-pixel-mask", str(tmp_path / "small.fits")) == 1
    assert "pass a mask of the frame's shape" in capsys.readouterr().err
    assert _detect(tmp_path / "frame.fits", "fast", tmp_path / "d", "--bad-pixel-mask", str(tmp_path / "none.fits")) == 2


# Streaming stages (issue #14): reader and writer threads around the detection ------------------------------

# warnings.catch_warnings() is not thread-safe (before Python 3.14) and astropy enters it on the detection and
# writer threads (sigma clipping, table compression): one leaving its block can drop the reader's "ignore
# AstropyWarning" while fits.open reads corrupt.fits. The reader's warning is then raised by pytest's
# "error" filter inside astropy, which leaks the file's handle; outside pytest it would only be printed.
@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
@pytest.mark.parametrize("encoders", [0, 2])
def test_streamed_batch_equals_file_by_file_detection_and_isolates_failures(encoders, tiny_checkpoint, tmp_path,
                                                                             caplog):
    """One process, files through the reader/detector/writer stages (with the extensions compressed in the
    writer thread or in encoder threads): the outputs are byte-identical to detect_file's, in the
    batch's order; a file whose second CCD fails leaves no output and no temporary file, a corrupt file
    fails alone, and an existing output is kept with --skip-existing."""
    from crdetect.pipeline import DetectOptions, detect_file, run_batch

    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = []
    for i in range(3):
        paths.append(_raw_multi_amplifier_file(inputs / f"raw{i}.fits"))
    broken = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_frame().astype(np.float32), name="SCI", ver=1),
                           fits.ImageHDU(np.full((96, 128), np.nan, np.float32), name="SCI", ver=2)])
    broken.writeto(inputs / "nan_ccd.fits")
    (inputs / "corrupt.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    paths += [inputs / "nan_ccd.fits", inputs / "corrupt.fits"]
    reference = tmp_path / "reference"
    reference.mkdir()
    options = DetectOptions(model=str(tiny_checkpoint), out_dir=str(reference), precision="float32")
    for path in paths[:3]:
        rows = detect_file(path, options)
        assert [r["status"] for r in rows] == ["ok"] * 4
    streamed = tmp_path / "streamed"
    with caplog.at_level(logging.INFO, logger="crdetect.pipeline"):
        rows, summary = run_batch(paths, DetectOptions(model=str(tiny_checkpoint), out_dir=str(streamed),
                                                       precision="float32", encoders=encoders), jobs=1, progress=False)
    # the run's account of its stages: 3 files of 4 CCDs and the good CCD of nan_ccd.fits were searched
    assert "13 images in" in caplog.text and "work per stage: read" in caplog.text
    assert f"({encoders} encoder threads)" in caplog.text
    assert [r["file"] for r in rows] == [str(p) for p in paths[:3] for _ in range(4)] + [str(p) for p in paths[3:]]
    for path in paths[:3]:
        name = path.stem + "_crmask.fits"
        assert (streamed / name).read_bytes() == (reference / name).read_bytes()
    assert rows[-2]["status"].startswith("error:") and "no finite pixels" in rows[-2]["status"]
    assert rows[-1]["status"].startswith("error:") and "corrupt" in rows[-1]["status"]
    assert not (streamed / "nan_ccd_crmask.fits").exists() and not list(streamed.glob(".*.tmp"))
    again, _ = run_batch(paths[:2], DetectOptions(model=str(tiny_checkpoint), out_dir=str(streamed),
                                                  skip_existing=True), jobs=1, progress=False)
    assert {r["status"] for r in again} == {"skipped (output exists)"}


def test_encoder_threads_only_beside_a_gpu_unless_asked_for():
    from crdetect.pipeline import DetectOptions, encoder_count

    assert encoder_count(DetectOptions(), "cpu") == 0  # the network keeps every core busy there
    assert 1 <= encoder_count(DetectOptions(), "cuda:0") <= 8
    assert encoder_count(DetectOptions(encoders=3), "cpu") == 3 and encoder_count(DetectOptions(encoders=0), "cuda") == 0
