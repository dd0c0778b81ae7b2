"""Issue #25: LCO-like consecutive exposures (crdetect simulate --preset lco-ci), labelled from the stacks, 1024 px
patches with weight maps, Gemini-like test sets, and training Cosmic-CoNN on them."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits

from crdetect import InputError
from crdetect.cli import main
from crdetect.data.augment import PatchSplit
from crdetect.data.inject import load_cr_library
from crdetect.data.lco import binned_library, set_jobs, simulate_set
from crdetect.data.telescopes import CONSECUTIVE_PRESETS, TELESCOPES
from crdetect.training import TrainConfig


@pytest.fixture(scope="module")
def lco_ci(tmp_path_factory):
    out = tmp_path_factory.mktemp("lco") / "lco-ci"
    assert main(["--quiet", "simulate", "--preset", "lco-ci", "--out", str(out), "--jobs", "2"]) == 0
    return out


def test_lco_ci_makes_labelled_stacks_1024_px_patches_with_weights_and_gemini_test_sets(lco_ci):
    meta = json.loads((lco_ci / "meta.json").read_text())
    assert meta["counts"] == {"train.h5": 9, "val.h5": 6, "test.h5": 9, "test_gemini_1x1.h5": 3,
                              "test_gemini_2x2.h5": 3}  # one 1024 px patch per exposure; 2 of the 5 sets to val
    for name in meta["counts"]:
        with h5py.File(lco_ci / name) as f:
            assert f["image"].shape[1:] == (1024, 1024) and f["weight"].shape[1:] == (1024, 1024)
            assert f["mask"][:].any() and f["weight"][:].max() == 255  # CR labels and the median-weighted map
            kinds = set(f["meta/kind"][:].astype(str))
        expected = {"train.h5": {"lco_0m4", "lco_1m", "lco_2m"}, "test.h5": {"lco_0m4", "lco_1m", "lco_2m"},
                    "test_gemini_1x1.h5": {"gemini_1x1"}, "test_gemini_2x2.h5": {"gemini_2x2"}}.get(name)
        assert expected is None or kinds >= expected
    # the labels' quality against the simulator's truth, per class: most true CR pixels, few false ones
    for name, quality in meta["label_quality"].items():
        assert quality["recall"] > 0.8 and quality["precision"] > 0.9, (name, quality)
        assert quality["false_per_mpix"] < 500
    # every exposure is kept as FITS with the stack's labels and the truth
    exposures = sorted(set((lco_ci / "stacks").rglob("*.fits")) - set((lco_ci / "stacks").rglob("*_crlabel.fits")))
    assert len(exposures) == 30
    with fits.open(exposures[0]) as hdus:
        assert hdus[0].data.shape == (1024, 1024)
        assert hdus[0].header["GAIN"] > 0 and hdus[0].header["RDNOISE"] > 0 and "CCDSUM" in hdus[0].header
    with fits.open(exposures[0].parent / (exposures[0].stem + "_crlabel.fits")) as hdus:
        assert [h.name for h in hdus] == ["PRIMARY", "CRMASK", "IGNORE", "TRUTH"]


def test_the_stacks_carry_what_crdetect_label_makes_of_them(lco_ci, tmp_path):
    """The labels are crdetect label's on the written exposures (less the detector's bad pixels, which LCO's pipeline
    masks and the simulator moves into IGNORE)."""
    files = sorted((lco_ci / "stacks" / "gemini_2x2").glob("*_[0-9].fits"))
    assert len(files) == 3
    assert main(["--quiet", "label", *map(str, files), "--out", str(tmp_path)]) == 0
    for path in files:
        with fits.open(path.parent / (path.stem + "_crlabel.fits")) as ours, \
                fits.open(tmp_path / (path.stem + "_crlabel.fits")) as labelled:
            theirs = labelled["CRMASK"].data > 0
            mask, ignore = ours["CRMASK"].data > 0, ours["IGNORE"].data > 0
            assert mask.any() and np.array_equal(theirs & ~ignore, mask)


def test_cosmic_conn_trains_on_1024_px_crops_with_the_median_weighted_loss(lco_ci, tmp_path):
    """The issue's done-when: crdetect train --model cosmic_conn --loss median_weighted --crop 1024 on lco-ci."""
    assert main(["--quiet", "train", "--model", "cosmic_conn", "--model-kwargs", '{"base_channels": 8}', "--loss",
                 "median_weighted", "--crop", "1024", "--data", str(lco_ci), "--epochs", "2", "--epoch-patches", "2",
                 "--batch-size", "1", "--max-val-patches", "1", "--device", "cpu", "--out", str(tmp_path)]) == 0
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[-1] for row in rows[1:]] == ["2", "4"]  # patches seen: validation every 2 crops


def test_consecutive_exposures_show_one_field_with_its_own_noise_and_hits():
    s = simulate_set("lco_1m", (256, 256), np.random.default_rng(5))
    clean = [f.image - f.cr_charge_adu for f in s.frames]
    other = simulate_set("lco_1m", (256, 256), np.random.default_rng(6)).frames[0]
    # the same sources (correlated, where another field is not), each exposure with its own hits
    assert np.corrcoef(clean[0].ravel(), clean[1].ravel())[0, 1] > 0.8
    assert np.corrcoef(clean[0].ravel(), (other.image - other.cr_charge_adu).ravel())[0, 1] < 0.3
    assert not np.array_equal(s.frames[0].cr_mask, s.frames[1].cr_mask)
    assert np.array_equal(s.frames[0].ignore, s.frames[2].ignore)  # one detector: the same bad pixels
    assert np.all(np.abs(s.offsets) <= 0.5)
    seeing = [f.seeing_arcsec for f in s.frames]
    assert len(set(seeing)) == 3 and max(seeing) / min(seeing) < 1.25


def test_binned_readouts_keep_the_charge_and_the_hit_rate_per_unit_area():
    library = load_cr_library().pool("train")
    binned = binned_library("train", 2, 15.0)
    assert sum(s.sum() for s in binned.footprints) == pytest.approx(sum(s.sum() for s in library.footprints), rel=1e-5)
    # a 2x2-binned 15 um pixel is 9 times the area of the library's 10 um pixel
    assert binned.rate_per_px_s == pytest.approx(9 * library.rate_per_px_s)


def test_presets_record_the_seeds_counts_and_split_whole_sets():
    lco = CONSECUTIVE_PRESETS["lco"]
    assert lco.frames()["train"] == 4161 and lco.frames()["test_lco"] == 357
    jobs = set_jobs(CONSECUTIVE_PRESETS["lco-small"])
    val = [j for j in jobs if j[0] == "val"]
    assert val and {j[1] for j in val} == {"lco_0m4", "lco_1m", "lco_2m"}  # whole sets, every class in turn
    assert {j[0] for j in jobs} == {"train", "val", "test", "gemini_1x1", "gemini_2x2"}
    assert TELESCOPES["gemini_2x2"].pixel_scale == pytest.approx(2 * TELESCOPES["gemini_1x1"].pixel_scale)


def test_lco_presets_refuse_the_decam_only_options_and_too_large_patches(tmp_path, capsys):
    assert main(["simulate", "--preset", "lco-ci", "--seeing", "1", "2", "--out", str(tmp_path)]) != 0
    assert "--seeing apply to the DECam-like presets" in capsys.readouterr().err
    from crdetect.data.lco import build_consecutive

    with pytest.raises(InputError, match="multiple of 16 from 64 to 1024"):
        build_consecutive(tmp_path, "lco-ci", patch=2048, progress=False)
    assert main(["simulate", "--preset", "lco-ci", "--dry-run"]) == 0
    assert "4161 training and 357 test frames" in capsys.readouterr().out


def test_epochs_of_a_fixed_number_of_patches_run_through_shuffled_passes():
    split = PatchSplit(None, torch.zeros(10, 4, 4), *(torch.zeros(10, 4, 4, dtype=torch.uint8),) * 2, None,
                       *(torch.zeros(10),) * 3)
    # six epochs of 5 patches are three passes over the 10 patches, each pass a permutation
    seen = torch.cat([torch.cat(split.stream_batches(5, epoch, 3, 5)) for epoch in range(6)])
    for p in range(3):
        assert sorted(seen[10 * p:10 * (p + 1)].tolist()) == list(range(10))
    # with an epoch of the split's size the order is that of plain epochs
    plain = split.batches(5, shuffle=True, epoch=1, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(split.stream_batches(5, 1, 3, 10), plain))
    with pytest.raises(ValueError, match="epoch_patches"):
        TrainConfig(epoch_patches=2, batch_size=4)

