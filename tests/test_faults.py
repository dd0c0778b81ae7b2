"""Faults users and hostile inputs met (issue #28): each test here failed before its fix."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import crdetect
from crdetect import InputError
from crdetect.cli import main


def _frame(shape=(160, 160), seed=0):
    return np.random.default_rng(seed).normal(1000.0, 10.0, shape).astype(np.float32)


def _summary(out: Path) -> list[dict]:
    with open(out / "summary.csv") as f:
        return list(csv.DictReader(f))


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``crdetect ARGS`` in a child process (a hang fails the test instead of blocking it)."""
    return subprocess.run([sys.executable, "-m", "crdetect.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


# 1. A full disk stops the run --------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 200 kB tmpfs (root only): room for one small output, not two."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (a container without CAP_SYS_ADMIN)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_stops_the_run_with_its_cause_in_the_summary(small_disk, tiny_checkpoint, tmp_path):
    inputs = []
    for i, side in enumerate((120, 160, 200)):
        inputs.append(tmp_path / f"f{i}.fits")
        fits.PrimaryHDU(_frame((side, side), seed=i)).writeto(inputs[-1])
    out = small_disk / "o"
    started = time.monotonic()
    result = _cli("detect", *map(str, inputs), "--model", str(tiny_checkpoint), "--out-dir", str(out), "-q")
    assert time.monotonic() - started < 60  # it hung in the detection thread's put before
    assert result.returncode == 1
    assert "No space left on device" in result.stderr
    statuses = [row["status"] for row in _summary(out)]
    assert statuses[0] == "ok"
    assert statuses[1].startswith("error: cannot write") and "No space left on device" in statuses[1]
    assert statuses[2].startswith("not processed (the run stopped: ")
    assert sorted(p.name for p in out.iterdir()) == ["f0_crmask.fits", "summary.csv"]  # no temporary left

    # one file: its row says the disk error (it said "not processed (interrupted)", exit 2)
    shutil.rmtree(out)
    result = _cli("detect", str(inputs[2]), str(inputs[2]), "--model", str(tiny_checkpoint), "--out-dir", str(out))
    # (the same input twice is one file)
    assert result.returncode == 1
    [row] = _summary(out)
    assert row["status"].startswith("error: cannot write") and "No space left on device" in row["status"]


def test_a_dead_writer_stops_the_run_within_seconds(tiny_checkpoint, tmp_path, monkeypatch):
    """Any stage that dies (here the writer, on a fault that is not the file's) ends the run: no hang, the cause in
    the summary."""
    from crdetect.pipeline import DetectOptions, run_batch
    from crdetect.pipeline.stages import OutputWriter

    paths = []
    for i in range(6):
        paths.append(tmp_path / f"f{i}.fits")
        fits.PrimaryHDU(_frame((48, 48), seed=i)).writeto(paths[-1])

    monkeypatch.setattr(OutputWriter, "handle", _handle_raising_base_exception(OutputWriter.handle))
    started = time.monotonic()
    rows, summary = run_batch(paths, DetectOptions(model=str(tiny_checkpoint), out_dir=str(tmp_path / "o")),
                              progress=False)
    assert time.monotonic() - started < 30
    assert all(row["status"] != "pending" for row in rows)
    assert any("the writer stopped: SystemError: the writer's own bug" in row["status"] for row in rows)
    assert not list((tmp_path / "o").glob(".*.tmp"))


def _handle_raising_base_exception(handle):
    """The writer's handle, failing outside its per-file safety net (a bug in the stage itself) on a file's end."""
    def wrapped(self, message):
        from crdetect.pipeline.stages import FileRead

        if isinstance(message, FileRead):
            raise SystemError("the writer's own bug")
        return handle(self, message)

    return wrapped


# 2. Two runs into one out-dir ---------------------------------------------------------------------------------

def test_an_output_published_meanwhile_by_another_run_is_reported_and_the_exit_status_says_so(
        tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import crdetect.atomic

    path = tmp_path / "f.fits"
    fits.PrimaryHDU(_frame((48, 48))).writeto(path)
    publish = crdetect.atomic._publish

    def other_run_first(tmp, target, overwrite):
        Path(target).write_bytes(b"the other run's output")
        publish(tmp, target, overwrite)

    monkeypatch.setattr(crdetect.atomic, "_publish", other_run_first)
    assert main(["detect", str(path), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o"), "-q"]) == 1
    [row] = _summary(tmp_path / "o")
    assert row["status"] == "not written: another run wrote this output meanwhile (left as it is)"
    assert (tmp_path / "o" / "f_crmask.fits").read_bytes() == b"the other run's output"
    assert "another run wrote this output meanwhile" in capsys.readouterr().err


def test_an_output_that_appeared_after_planning_was_written_by_another_run(tiny_checkpoint, tmp_path):
    from crdetect.pipeline import DetectOptions
    from crdetect.pipeline.stages import WRITTEN_ELSEWHERE, FileJob, FileSettled, read_file

    path, out = tmp_path / "f.fits", tmp_path / "f_crmask.fits"
    fits.PrimaryHDU(_frame((32, 32))).writeto(path)
    out.write_bytes(b"theirs")
    [message] = read_file(FileJob(0, path, out, existed=False), DetectOptions(model=str(tiny_checkpoint)))
    assert isinstance(message, FileSettled) and message.rows[0]["status"] == WRITTEN_ELSEWHERE
    [message] = read_file(FileJob(0, path, out, existed=True), DetectOptions())  # there before the run
    assert message.rows[0]["status"].startswith("error: ") and "exists; pass --overwrite" in message.rows[0]["status"]


def test_two_concurrent_runs_account_for_every_file(tiny_checkpoint, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    for i in range(4):
        fits.PrimaryHDU(_frame((64, 64), seed=i)).writeto(batch / f"f{i}.fits")
    command = [sys.executable, "-m", "crdetect.cli", "detect", str(batch), "--model", str(tiny_checkpoint),
               "--out-dir", str(tmp_path / "o"), "-q"]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(p.name for p in (tmp_path / "o").glob("*.fits")) == [f"f{i}_crmask.fits" for i in range(4)]
    statuses = {row["status"] for row in _summary(tmp_path / "o")}  # the summary of the run that ended last
    assert "pending" not in statuses
    # a file is written by this run, or by the other one while this one ran, or was there when it began (the
    # other run had finished it; on a busy machine one run can start after the other ended)
    allowed = {"ok", "not written: another run wrote this output meanwhile (left as it is)"}
    assert all(status in allowed or "exists; pass --overwrite" in status for status in statuses)
    for code, error in zip(codes, errors):  # 0 exactly when the run wrote all four itself
        assert code == (1 if ("another run wrote this output meanwhile" in error or "exists;" in error) else 0)


# 3. A crdetect output is not an input ---------------------------------------------------------------------------

def test_an_output_of_crdetect_is_refused_as_input(tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "x.fits"
    fits.PrimaryHDU(_frame((48, 48))).writeto(path)
    common = ["--model", str(tiny_checkpoint), "-q"]
    assert main(["detect", str(path), "--out-dir", str(tmp_path / "o"), *common]) == 0
    assert main(["detect", str(tmp_path / "o" / "x_crmask.fits"), "--out-dir", str(tmp_path / "o2"), *common]) == 1
    assert "is an output of crdetect (it has CRMASK/CRPROB extensions)" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "x_crmask_crmask.fits").exists()
    with fits.open(tmp_path / "o" / "x_crmask.fits") as hdul:
        assert [h.name for h in hdul].count("CRMASK") == 1


# 4. The Python API checks its numbers -------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (dict(gain=2, readnoise=np.nan), "readnoise must be a finite number >= 0"),
    (dict(gain=0.0), "gain must be a finite number > 0"),
    (dict(gain=np.inf), "gain must be a finite number > 0"),
    (dict(gain="2"), "gain must be a finite number > 0"),
    (dict(satlevel=-5.0), "satlevel must be a finite number > 0"),
    (dict(grow=-1), "grow must be a whole number >= 0"),
    (dict(grow=1.5), "grow must be a whole number >= 0"),
    (dict(tile=np.nan), "tile must be a whole number >= 0"),
])
def test_detect_cosmics_refuses_bad_numbers(options, message, tiny_checkpoint):
    with pytest.raises(InputError, match=message):
        crdetect.detect_cosmics(_frame((32, 32)), model=str(tiny_checkpoint), **options)


def test_an_infinite_saturation_level_means_none(tiny_checkpoint):
    image = _frame((32, 32))
    infinite, _ = crdetect.detect_cosmics(image, model=str(tiny_checkpoint), satlevel=np.inf, clean=False)
    none, _ = crdetect.detect_cosmics(image, model=str(tiny_checkpoint), satlevel=None, clean=False)
    np.testing.assert_array_equal(infinite, none)


# 5. Outputs stay inside the out-dir ---------------------------------------------------------------------------

def test_a_linked_directory_inside_the_out_dir_is_not_followed(tiny_checkpoint, tmp_path, capsys):
    for folder in ("dupA", "dupB"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        fits.PrimaryHDU(_frame((32, 32))).writeto(tmp_path / "in" / folder / "frame.fits")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "dupA").symlink_to(elsewhere)
    assert main(["detect", str(tmp_path / "in" / "dupA" / "frame.fits"), str(tmp_path / "in" / "dupB" / "frame.fits"),
                 "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "out"), "-q"]) == 2
    assert "leads outside the out-dir" in capsys.readouterr().err
    assert not list(elsewhere.iterdir())


# 6. A straight step is not a cosmic ray ----------------------------------------------------------------------

def test_steps_are_found_levelled_and_frames_without_them_left_alone():
    import torch

    from crdetect.steps import level_steps

    flat = torch.from_numpy(_frame((200, 300)))
    levelled, found = level_steps(flat, 10.0)
    assert levelled is flat and found == {"columns": [], "rows": []}
    stepped = flat.clone()
    stepped[:, 280:] -= 100.0  # an overscan at the bias level
    stepped[190:, :] -= 60.0  # unexposed rows
    stepped[:, 150] += 500.0  # a hot column is no step
    levelled, found = level_steps(stepped, 10.0)
    assert found == {"columns": [279], "rows": [189]}
    assert abs(float(levelled[:, 285].median() - levelled[:, 100].median())) < 5
    assert abs(float(levelled[195, :].median() - levelled[100, :].median())) < 5
    assert float(stepped[0, 290]) == float(flat[0, 290]) - 100.0  # the caller's tensor is untouched


def test_the_drop_in_leaves_the_overscan_step_of_a_raw_frame_alone(shared_data):
    """SAAO 1.0 m raw frame with prescan and overscan (data in columns 16-527, unexposed rows from 512): the
    default model flagged 57 px on column 527 (489 without gain and read noise); astroscrappy none."""
    image = fits.getdata(shared_data / "real" / "b3_saao_ccdproc" / "a8280271.fits").astype(np.float32)
    for options in (dict(gain=1.9, readnoise=5.0), {}):
        mask, _ = crdetect.detect_cosmics(image, clean=False, **options)
        columns = np.nonzero(mask)[1]
        rows = np.nonzero(mask)[0]
        assert not np.isin(columns, [14, 15, 16, 17, 526, 527, 528, 529]).any()
        assert not np.isin(rows, [510, 511, 512, 513]).any()
        assert mask.sum() < 90  # 62 and 71 (119 and 623 before); astroscrappy 51


# 7. Messages -----------------------------------------------------------------------------------------------------

def test_a_checkpoint_is_never_loaded_unsafely_nor_advised_to_be(tmp_path):
    import torch

    class Payload:
        def __reduce__(self):
            return (print, ("code from the file",))

    torch.save({"x": Payload()}, tmp_path / "objects.pt")
    (tmp_path / "garbage.pt").write_text("not a checkpoint")
    with pytest.raises(crdetect.CheckpointError, match="never loads those") as objects:
        crdetect.load_detector(tmp_path / "objects.pt")
    with pytest.raises(crdetect.CheckpointError, match="not a PyTorch file, or it is corrupt") as garbage:
        crdetect.load_detector(tmp_path / "garbage.pt")
    for error in (objects, garbage):
        assert "weights_only" not in str(error.value)


def test_unknown_names_get_distinct_suggestions_and_no_list_twice():
    with pytest.raises(InputError) as error:
        crdetect.load_detector("nope")
    message = str(error.value)
    assert "'unet', 'unet'" not in message
    assert "Untrained registry networks" not in message  # every registry network ships weights now
    with pytest.raises(InputError, match="Did you mean 'default'"):
        crdetect.load_detector("defualt")


def test_hdu_numbers_are_never_counted_from_the_end_and_auxiliary_planes_are_named(tiny_checkpoint, tmp_path,
                                                                                    capsys, caplog):
    path = tmp_path / "hst.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_frame((48, 48)), name="SCI"),
                  fits.ImageHDU(np.full((48, 48), 25, np.float32) + _frame((48, 48)) / 100, name="VAR")]).writeto(path)
    common = ["--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o")]
    assert main(["detect", str(path), "--hdu", "-1", *common]) == 2
    assert "HDU numbers count from 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["detect", str(path), "--hdu", "VAR", *common]) == 0
    assert "looks like a error, variance or other auxiliary plane" in caplog.text
    mask = fits.getdata(tmp_path / "o" / "hst_hduVAR_crmask.fits", "CRMASK")  # EXTVER 1: the natural read
    assert mask.shape == (48, 48)
    assert fits.getheader(tmp_path / "o" / "hst_hduVAR_crmask.fits", "CRMASK")["CRSCIEXT"] == 2


def test_a_read_only_array_is_accepted_without_a_warning(tiny_checkpoint):
    image = _frame((32, 32))
    image.flags.writeable = False
    mask, _ = crdetect.detect_cosmics(image, model=str(tiny_checkpoint))  # warnings are errors in these tests
    assert mask.shape == (32, 32)


def test_a_file_that_is_not_fits_is_named_as_such(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "picture.fits").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert main(["detect", str(tmp_path / "picture.fits"), "--model", str(tiny_checkpoint), "--out-dir",
                 str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "is not a FITS file" in err and "ignore_missing_simple" not in err


def test_a_wrong_input_path_creates_nothing(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "typo.fits"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_threshold_one_flags_nothing():
    image = _frame((64, 64))
    image[30, 30] += 5e4  # a certain hit: its probability rounds to 1.0 in float32
    detector = crdetect.load_detector("default", source_veto=False)
    assert detector.predict(image, threshold=0.999).mask[30, 30]
    assert not detector.predict(image, threshold=1.0).mask.any()


def test_models_lists_what_models_were_trained_on_without_internal_paths(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "out/" not in out and "trained on see the model card" in out


# 8. -v and -q on both sides of the subcommand -----------------------------------------------------------------

def test_verbosity_options_before_and_after_the_subcommand(tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "f.fits"
    fits.PrimaryHDU(_frame((32, 32))).writeto(path)
    assert main(["-q", "detect", str(path), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out == ""
    assert main(["detect", str(path), "--model", str(tiny_checkpoint), "--out-dir", str(tmp_path / "b"), "-v"]) == 0
    assert main(["-v", "models", "-q", "tunet_*"]) == 0


# 9. evaluate without a test set ------------------------------------------------------------------------------

def test_evaluate_on_real_frames_only_leaves_the_test_columns_empty(shared_data, tiny_checkpoint, tmp_path):
    assert main(["evaluate", "--runs", str(tiny_checkpoint), "--baselines", "", "--real",
                 str(shared_data / "real"), "--out", str(tmp_path / "e"), "-q"]) == 0
    with open(tmp_path / "e" / "results.csv") as f:
        [row] = list(csv.DictReader(f))
    assert row["test_tpr@0.0001"] == "" and row["test_dice"] == ""
    assert row["hst_wfpc2_tpr@1e-4"] != ""


# 11. Stars with near-Gaussian cores ---------------------------------------------------------------------------

def test_astroscrappys_test_image_has_its_hits_found_and_its_stars_left_alone():
    """astroscrappy's own test image: 100 Gaussian stars of FWHM 3.5 px and 100 single-pixel hits. The default
    model found every hit and flagged 4 regions (54 px) on bright stars, one a ring of 38 px around a core."""
    fake_data = pytest.importorskip("astroscrappy.tests.fake_data")
    from scipy import ndimage

    image, hits = fake_data.make_fake_data()
    mask, _ = crdetect.detect_cosmics(image, readnoise=10.0, gain=1.0, clean=False)
    assert (mask & hits).sum() == hits.sum()
    stray = mask & ~ndimage.binary_dilation(hits)
    assert stray.sum() <= 2  # one noise pixel on the sky


@pytest.mark.parametrize("fwhm", [3.5, 5.0])
def test_wingless_stars_of_every_brightness_are_left_alone(fwhm):
    """Gaussian stars (no wings for the veto to see) from 5 to 2,000 sigma: none flagged, whole or in part.
    (Narrower ones, FWHM under about 2.8 px, are shaped like a muon's diffusion spot and some stay flagged.)"""
    rng = np.random.default_rng(3)
    size, sky, read_noise = 480, 200.0, 10.0
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size), sky)
    sigma = fwhm / 2.3548
    centres = []
    for k, peak in enumerate(np.geomspace(90, 35000, 36)):
        cy, cx = 40 + (k // 6) * 80 + rng.uniform(-2, 2), 40 + (k % 6) * 80 + rng.uniform(-2, 2)
        image += peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        centres.append((int(cy), int(cx)))
    image = (rng.poisson(image) + rng.normal(0, read_noise, image.shape)).astype(np.float32)
    mask, _ = crdetect.detect_cosmics(image, gain=1.0, readnoise=read_noise, satlevel=None, clean=False)
    near_a_star = np.zeros(mask.shape, bool)
    for cy, cx in centres:
        near_a_star[cy - 12:cy + 13, cx - 12:cx + 13] = True
    assert not (mask & near_a_star).any()
    # int8 (what auto runs on a CPU) flags one 4-sigma noise pixel on the sky of the FWHM 3.5 frame; float32 none
    assert (mask & ~near_a_star).sum() <= 1
