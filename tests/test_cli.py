"""`crdetect detect` and `crdetect models` on real frames from ../shared/data/real and on broken files."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from crdetect.cli import SAMPLE_FILE, main
from crdetect.inference import resolve_precision
from crdetect.io.reading import read_science_hdus
from crdetect.io.writing import PROBABILITY_BSCALE


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_models_table_lists_every_model_with_its_count(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "deepcr_unet" in out and "467,233" in out and "tunet_9" in out and "450,073" in out


def test_detect_gmos_writes_mask_and_probability_and_leaves_the_input_alone(shared_data, tiny_checkpoint, tmp_path):
    """Gemini GMOS-S long-slit cutout from astroscrappy's tests: SCI/VAR/SKYFIT, empty primary."""
    source = shared_data / "real" / "a1_gmos_astroscrappy" / "gmos.fits"
    before = _sha(source)
    assert main(["detect", str(source), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path)]) == 0
    assert _sha(source) == before
    out = tmp_path / "gmos_crmask.fits"
    with fits.open(out) as hdul:
        names = [h.name for h in hdul]
        assert names == ["PRIMARY", "SCI", "VAR", "SKYFIT", "CRMASK", "CRPROB", "CRVETO"]
        mask, prob = hdul["CRMASK"].data, hdul["CRPROB"].data
        assert mask.dtype == np.uint8 and mask.shape == (150, 200)
        assert prob.dtype == np.float32 and prob.shape == (150, 200)
        assert hdul["CRMASK"].header["CRSCINAM"] == "SCI" and hdul["CRMASK"].header["CRSCIEXT"] == 1
        assert "tiny.pt" in hdul["CRPROB"].header["CRMODEL"] and hdul["CRPROB"].header["CRTHRESH"] == 0.5
        # the CLI's default precision: bfloat16 where this CPU has it natively, else float32
        assert hdul["CRMASK"].header["CRPRECIS"] == resolve_precision("auto", torch.device("cpu"))
        decided = np.abs(prob - 0.5) > PROBABILITY_BSCALE  # CRPROB is stored in 16-bit steps
        np.testing.assert_array_equal(mask[decided], (prob >= 0.5)[decided].astype(np.uint8))
        with fits.open(source) as original:
            np.testing.assert_array_equal(hdul["SCI"].data, original["SCI"].data)
    assert not list(tmp_path.glob(".*.tmp"))


def test_precision_option_is_used_and_recorded(shared_data, tiny_checkpoint, tmp_path):
    source = shared_data / "real" / "a1_gmos_astroscrappy" / "gmos.fits"
    assert main(["detect", str(source), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path),
                 "--precision", "bfloat16", "-q"]) == 0
    with fits.open(tmp_path / "gmos_crmask.fits") as hdul:
        assert hdul["CRMASK"].header["CRPRECIS"] == "bfloat16"
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["detect", str(source), "--precision", "half"])


def test_refuses_to_overwrite_unless_asked(shared_data, tiny_checkpoint, tmp_path, capsys):
    source = shared_data / "real" / "b1_hsc_lsst" / "hsc_crs.fits"
    args = ["detect", str(source), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path)]
    assert main(args) == 0
    assert main(args) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(args + ["--skip-existing"]) == 0


def test_integer_sample_is_copied_bit_for_bit(tiny_checkpoint, tmp_path):
    """The bundled SAAO raw frame: uint16 stored as int16 + BZERO, RICE-compressed."""
    assert main(["detect", "--sample", "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path), "-q"]) == 0
    out = tmp_path / "saao_a8280271_crmask.fits"
    with fits.open(out) as hdul, fits.open(SAMPLE_FILE) as original:
        np.testing.assert_array_equal(hdul["SCI"].data, original["SCI"].data)
        assert hdul["CRMASK"].data.shape == original["SCI"].data.shape == (520, 536)


def test_every_image_hdu_of_a_multi_extension_file(tiny_checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(rng.normal(100, 5, (40, 30)).astype(">f4"), name=f"CCD{i}")
                                        for i in range(1, 4)]).writeto(path)
    assert main(["detect", str(path), "--hdu", "all", "--model", str(tiny_checkpoint), "--out-dir",
                 str(tmp_path / "out"), "-q"]) == 0
    with fits.open(tmp_path / "out" / "mef_crmask.fits") as hdul:
        masks = [h for h in hdul if h.name == "CRMASK"]
        assert [h.header["CRSCINAM"] for h in masks] == ["CCD1", "CCD2", "CCD3"]
        assert [h.ver for h in masks] == [1, 2, 3]
    scis = read_science_hdus(path, "CCD2")
    assert len(scis) == 1 and scis[0].index == 2 and scis[0].data.dtype == np.float32
    assert scis[0].data.dtype.isnative


def test_mask_only_output_holds_the_crdetect_extensions_without_the_input(tiny_checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mef.fits"
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = "field 7"
    fits.HDUList([primary] + [fits.ImageHDU(rng.normal(100, 5, (200, 150)).astype(np.float32), name=f"CCD{i}")
                              for i in (1, 2)]).writeto(path)
    common = [str(path), "--hdu", "all", "--model", str(tiny_checkpoint), "-q"]
    assert main(["detect", *common, "--out-dir", str(tmp_path / "full")]) == 0
    assert main(["detect", *common, "--out-dir", str(tmp_path / "small"), "--mask-only"]) == 0
    full, small = tmp_path / "full" / "mef_crmask.fits", tmp_path / "small" / "mef_crmask.fits"
    assert small.stat().st_size < 0.4 * full.stat().st_size
    with fits.open(full) as whole, fits.open(small) as masks_only:
        assert [h.name for h in masks_only] == ["PRIMARY", "CRMASK", "CRPROB", "CRVETO", "CRMASK", "CRPROB", "CRVETO"]
        assert masks_only[0].data is None and masks_only[0].header["OBJECT"] == "field 7"
        assert masks_only[0].header["CRINPUT"] == "mef.fits"
        for extension in ("CRMASK", "CRPROB", "CRVETO"):
            for version in (1, 2):
                np.testing.assert_array_equal(masks_only[extension, version].data, whole[extension, version].data)


@pytest.mark.parametrize("make, message", [
    (lambda p: fits.PrimaryHDU(np.zeros(10, np.float32)).writeto(p), "no 2-D science image HDU"),
    (lambda p: fits.PrimaryHDU(np.zeros((2, 3, 4), np.float32)).writeto(p), "no 2-D science image HDU"),
    (lambda p: p.write_bytes(b"SIMPLE  = T" + b" " * 100), "corrupt, truncated or not FITS"),
    (lambda p: p.write_text("not a fits file"), "is not a FITS file"),
])
def test_bad_files_exit_nonzero_with_one_clear_line(make, message, tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "bad.fits"
    make(path)
    assert main(["detect", str(path), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "bad_crmask.fits").exists()


def test_truncated_real_file(shared_data, tiny_checkpoint, tmp_path, capsys):
    data = (shared_data / "real" / "b4_kpno_m51_devpix_maskfill" / "m51_org.fits").read_bytes()
    path = tmp_path / "m51_cut.fits"
    path.write_bytes(data[: len(data) // 2])
    assert main(["detect", str(path), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o")]) == 1
    assert "truncated" in capsys.readouterr().err
    assert not (tmp_path / "o" / "m51_cut_crmask.fits").exists()


def test_missing_hdu_and_3d_hdu(tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 8, 8), np.float32), name="CUBE")]).writeto(path)
    common = ["--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o")]
    assert main(["detect", str(path), "--hdu", "SCI"] + common) == 1
    assert "has no HDU 'SCI'; HDUs are: 0:PRIMARY (no image), 1:CUBE (8x8x2)" in capsys.readouterr().err
    assert main(["detect", str(path), "--hdu", "1"] + common) == 1
    assert "is 3-D" in capsys.readouterr().err
    assert main(["detect", str(path), "--hdu", "7"] + common) == 1
    assert "has no HDU '7'" in capsys.readouterr().err


def test_unknown_model_exits_with_suggestion(tmp_path, capsys):
    assert main(["detect", "--sample", "--model", "deepcr-unet", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'deepcr_unet'" in err and err.count("\n") == 1


def test_failed_file_does_not_stop_the_batch(shared_data, tiny_checkpoint, tmp_path, capsys):
    good = shared_data / "real" / "b6_eso_emmi_sep" / "image.fits"
    missing = tmp_path / "vanished.fits"
    assert main(["detect", str(missing), str(good), "--model", str(tiny_checkpoint), "--out-dir",
                 str(tmp_path / "o"), "-q"]) == 1
    assert (tmp_path / "o" / "image_crmask.fits").exists()
    assert "1 of 2 files were not written by this run" in capsys.readouterr().err


def test_directory_and_glob_inputs(shared_data, tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("image.fits",):
        shutil.copy(shared_data / "real" / "b6_eso_emmi_sep" / name, folder / name)
    shutil.copy(shared_data / "real" / "b1_hsc_lsst" / "hsc_crs.fits", folder / "hsc.fits")
    assert main(["detect", str(folder), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "a"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "a").glob("*.fits")) == ["hsc_crmask.fits", "image_crmask.fits"]
    assert main(["detect", str(folder / "h*.fits"), "--model", str(tiny_checkpoint), "--out-dir",
                 str(tmp_path / "b"), "-q"]) == 0
    assert [p.name for p in (tmp_path / "b").glob("*.fits")] == ["hsc_crmask.fits"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_read_only_output_directory(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert main(["detect", "--sample", "--model", str(tiny_checkpoint), "--out-dir", str(out)]) == 2
        assert "cannot write into" in capsys.readouterr().err
    finally:
        out.chmod(0o700)


def test_output_directory_that_cannot_be_created(tiny_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["detect", "--sample", "--model", str(tiny_checkpoint), "--out-dir", str(blocker / "sub")]) == 2
    assert "cannot write into" in capsys.readouterr().err


def test_summary_table_inpainting_and_skip_if_done(shared_data, tiny_checkpoint, tmp_path):
    import csv

    source = shared_data / "real" / "b1_hsc_lsst" / "hsc_crs.fits"
    args = ["detect", str(source), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path), "--inpaint",
            "--threshold", "0.3", "-q"]
    assert main(args) == 0
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["status"] == "ok" and rows[0]["shape"] == "300x300" and int(rows[0]["cr_pixels"]) >= 0
    with fits.open(tmp_path / "hsc_crs_crmask.fits") as hdul:
        mask, cleaned, original = hdul["CRMASK"].data > 0, hdul["CLEANED"].data, hdul[0].data
        np.testing.assert_array_equal(cleaned[~mask], original[~mask])  # only flagged pixels change
    assert main(args + ["--skip-existing"]) == 0
    with open(tmp_path / "summary.csv") as f:
        assert next(csv.DictReader(f))["status"] == "skipped (output exists)"


def test_parallel_workers_and_local_dask_cluster_give_the_same_masks(shared_data, tiny_checkpoint, tmp_path):
    pytest.importorskip("dask.distributed")
    files = [str(shared_data / "real" / d / f) for d, f in (("b6_eso_emmi_sep", "image.fits"),
                                                              ("b1_hsc_lsst", "hsc_crs.fits"))]
    common = ["--model", str(tiny_checkpoint), "--device", "cpu", "-q"]
    assert main(["detect", *files, "--out-dir", str(tmp_path / "serial")] + common) == 0
    assert main(["detect", *files, "--jobs", "2", "--out-dir", str(tmp_path / "jobs")] + common) == 0
    assert main(["detect", *files, "--scheduler", "local", "--out-dir", str(tmp_path / "dask")] + common) == 0
    def probability(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)  # the ESO frame's non-standard cards
            with fits.open(path, memmap=False) as hdul:
                return hdul["CRPROB"].data.copy()

    for name in ("image_crmask.fits", "hsc_crs_crmask.fits"):
        reference = probability(tmp_path / "serial" / name)
        for other in ("jobs", "dask"):
            # float differences of 1e-6 between processes can move a value by one 16-bit step
            np.testing.assert_allclose(probability(tmp_path / other / name), reference,
                                       atol=PROBABILITY_BSCALE + 1e-6)


def test_noise_from_gain_and_read_noise_options_or_header(tiny_checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    image = (400 + rng.normal(0, 10, (64, 64))).astype(np.float32)
    header = fits.Header({"GAIN": 4.0, "RDNOISE": 8.0})
    source = tmp_path / "frame.fits"
    fits.PrimaryHDU(image, header).writeto(source)

    def sigma_used(*options):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert main(["detect", str(source), "--model", str(tiny_checkpoint), "--out-dir", str(out), "-q",
                     *options]) == 0
        with fits.open(out / "frame_crmask.fits") as hdul:
            return hdul["CRMASK"].header["CRSKY"], hdul["CRMASK"].header["CRSIGMA"]

    sky, sigma = sigma_used()
    assert abs(sigma - 10) < 0.5 and abs(sky - 400) < 1  # estimated from the pixels
    sky, sigma = sigma_used("--noise-from-header")
    assert sigma == pytest.approx(np.sqrt(sky * 4.0 + 8.0**2) / 4.0, rel=1e-5)  # sqrt(sky*g + rn^2) / g, ADU
    assert sigma_used("--gain", "4", "--read-noise", "8", "--sky", "300") == pytest.approx(
        (300, np.sqrt(300 * 4.0 + 64) / 4.0), rel=1e-5)
    fits.PrimaryHDU(image).writeto(tmp_path / "bare.fits")
    assert main(["detect", str(tmp_path / "bare.fits"), "--model", str(tiny_checkpoint), "--out-dir",
                 str(tmp_path / "bare_out"), "--noise-from-header", "-q"]) != 0
    err = capsys.readouterr().err
    assert "no gain in the header" in err and "pass --gain" in err


def test_threads_option_sets_torch_threads_and_rejects_nonsense(shared_data, tiny_checkpoint, tmp_path):
    import torch

    source = shared_data / "real" / "a1_gmos_astroscrappy" / "gmos.fits"
    before = torch.get_num_threads()
    try:
        assert main(["detect", str(source), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path),
                     "--threads", "1", "-q"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (["--threads", "0"], ["--jobs", "-2"], ["--threads", "two"]):
        with pytest.raises(SystemExit):
            main(["detect", str(source), *bad])


def test_probability_is_stored_in_16_bit_steps_and_read_back_as_floats():
    from crdetect.io.writing import probability_hdu

    probability = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    probability[0, :3] = [0.0, 1.0, 0.5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdu = probability_hdu(probability)
    assert probability.max() <= 1.0 and probability[0, 1] == 1.0  # the caller's array is not rescaled in place
    import io

    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    buffer.seek(0)
    with fits.open(buffer) as hdul:
        header = hdul["CRPROB"].header
        assert header["BITPIX"] == 16 and header["BZERO"] == 0.5
        assert header["BSCALE"] == pytest.approx(PROBABILITY_BSCALE, rel=1e-12)
        stored = hdul["CRPROB"].data
        assert stored.dtype.kind == "f"
    assert np.abs(stored - probability).max() <= PROBABILITY_BSCALE / 2 + 1e-7
    np.testing.assert_allclose(stored[0, :3], [0.0, 1.0, 0.5], atol=1e-7)


def test_source_veto_is_its_own_plane_counted_in_the_header_and_can_be_turned_off(tmp_path):
    """The shipped default on a frame with a bright wingless star it flags: CRNVETO counts the vetoed pixels (-1
    with the veto off), CRVETO holds them with the veto's thresholds, CRPROB is the network's either way, and
    the mask with the veto plus the vetoed pixels is the mask without it. Grown masks never take vetoed pixels."""
    from test_veto import wingless_star_frame

    fits.PrimaryHDU(wingless_star_frame()).writeto(tmp_path / "star.fits")
    planes = {}
    for flag, name in (([], "on"), (["--no-source-veto"], "off"), (["--grow", "2"], "grown")):
        assert main(["detect", str(tmp_path / "star.fits"), "--precision", "float32", "--out-dir",
                     str(tmp_path / name), "-q"] + flag) == 0
        with fits.open(tmp_path / name / "star_crmask.fits") as hdul:
            planes[name] = {"mask": hdul["CRMASK"].data > 0, "count": hdul["CRMASK"].header["CRNVETO"],
                            "probability": hdul["CRPROB"].data,
                            "vetoed": hdul["CRVETO"].data > 0 if "CRVETO" in hdul else None,
                            "cards": hdul["CRVETO"].header.copy() if "CRVETO" in hdul else {}}
    on, off, grown = planes["on"], planes["off"], planes["grown"]
    assert off["count"] == -1 and off["vetoed"] is None
    assert on["count"] == on["vetoed"].sum() >= 20
    np.testing.assert_array_equal(on["mask"] | on["vetoed"], off["mask"])
    np.testing.assert_array_equal(on["probability"], off["probability"])
    assert on["cards"]["VETO01"] == 3.0 and on["cards"].comments["VETO01"] == "sharp_ratio"
    assert not (grown["mask"] & grown["vetoed"]).any()


def test_the_parsers_are_checked_against_the_option_dataclasses():
    """Every DetectOptions field is a destination of ``crdetect detect``'s parser, and every option of the batch
    augmentation a TrainConfig field that ``crdetect train`` sets and AugmentSettings takes by name (issue #27:
    one option once lived in five places)."""
    from dataclasses import fields

    from crdetect.cli import build_parser
    from crdetect.data.augment import AugmentSettings
    from crdetect.pipeline import DetectOptions
    from crdetect.training import TrainConfig

    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices

    def destinations(name):
        return {action.dest for action in subparsers[name]._actions}

    assert {f.name for f in fields(DetectOptions)} <= destinations("detect")
    config_fields = {f.name for f in fields(TrainConfig)}
    settable = {f.name for f in fields(AugmentSettings)} & config_fields
    assert {"pedestal_prob", "extra_hits", "hit_zoom", "hit_charge", "line_prob", "crop"} <= settable
    assert settable - {"sky_boost", "pedestal_peak"} <= destinations("train")  # those two: YAML only
    assert destinations("train") - {"help", "config", "out", "model_kwargs_json", "local_background", "verbose",
                                    "quiet", "debug"} <= config_fields
