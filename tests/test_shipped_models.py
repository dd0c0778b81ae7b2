"""The shipped models on real frames: against LA-Cosmic, on bright stars, on the README's sample.

Real frames (../shared/data/real, MANIFEST there): HST WFPC2 F814W with the original IRAF LA-Cosmic
mask as label (a reference that favours LA-Cosmic), KPNO M51 with CRs injected by the maskfill authors
(their mask; the real CRs of the original frame are ignored), Gemini GMOS-S with two known hits, and
CTIO Mosaic2 (tpv.fits) with saturated stars.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from crdetect import load_detector
from crdetect.baselines import LACosmicDetector, NetworkDetector
from crdetect.cli import main
from crdetect.data.real import gmos_boxes, injected_frames, m51_frame, wfpc2_frame
from crdetect.inference import shipped_weights
from crdetect.metrics import ScoreAccumulator

SHIPPED = ["default", "fast"]


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    return request.param, load_detector(request.param, device="cpu")


def test_shipped_models_have_weights_and_cards():
    for name in SHIPPED:
        path = shipped_weights(name)
        assert path is not None and path.stat().st_size < 5e6
        assert path.with_suffix(".md").read_text().startswith(f"# crdetect model card: `{name}`")


def _tpr(detector, frames, fprs=(1e-4, 1e-3)):
    """TPR at ``fprs`` over ``frames`` (a LabelledFrame or a list, pooled)."""
    acc = ScoreAccumulator(detector.threshold)
    for frame in frames if isinstance(frames, list) else [frames]:
        acc.update(detector.score(frame.frame, frame.scaling), frame.truth, frame.ignore)
    return [acc.tpr_at_fpr(f) for f in fprs]


@pytest.fixture(scope="module")
def lacosmic_tprs(shared_data):
    root = shared_data / "real"
    frames = {"hst_wfpc2": wfpc2_frame(root), "kpno_m51": m51_frame(root), "injected": injected_frames(root)}
    return {name: _tpr(LACosmicDetector(), frame) for name, frame in frames.items()}


def test_shipped_models_beat_lacosmic_on_held_out_hits_on_real_frames(shipped, shared_data, lacosmic_tprs):
    """Five real frames (HSC, SAAO, ESO, 2 x CTIO) with the CR library's held-out footprints added.
    Measured: default 0.90 / 0.96 and fast 0.89 / 0.96 against LA-Cosmic 0.60 / 0.74 (FPR 1e-4 / 1e-3)."""
    name, detector = shipped
    ours = _tpr(NetworkDetector(detector), injected_frames(shared_data / "real"))
    assert all(o > lc + 0.15 for o, lc in zip(ours, lacosmic_tprs["injected"])), (name, ours)


def test_saturated_star_cores_are_not_flagged(shipped, shared_data):
    """CTIO Mosaic2 I-band cutout: the extended regions above half the maximum are bright star cores."""
    name, detector = shipped
    path = shared_data / "real" / "b7_ctio_mosaic2_galsim" / "tpv.fits"
    image = fits.getdata(path).astype(np.float32)
    labels, count = ndimage.label(image > 0.5 * image.max())
    sizes = ndimage.sum_labels(np.ones_like(image), labels, range(1, count + 1))
    cores = np.isin(labels, np.flatnonzero(sizes >= 9) + 1)
    assert cores.sum() > 300
    mask = detector.detect(image, saturation=fits.getheader(path)["SATURATE"])
    assert (mask & cores).sum() == 0, name
    # without a level the cores' flat tops give it away (plateau_saturation); before: 115 / 62 px flagged
    assert (detector.detect(image) & cores).sum() == 0, name


def test_both_known_gmos_hits_are_found(shipped, shared_data):
    name, detector = shipped
    image, boxes = gmos_boxes(shared_data / "real")
    mask = detector.detect(image)
    assert all(mask[box].sum() >= 5 for box in boxes), name
    outside = mask.copy()
    for box in boxes:
        outside[box] = False
    assert outside.sum() < 50, name


def test_default_beats_lacosmic_at_fpr_1e4_on_wfpc2(shared_data, lacosmic_tprs):
    """Measured: default 0.72 vs LA-Cosmic 0.31 TPR at FPR 1e-4 on the WFPC2 frame (whose label was made by
    LA-Cosmic itself). At FPR 1e-3 LA-Cosmic is better there (0.88 vs 0.85): see the model card."""
    detector = NetworkDetector(load_detector("default", device="cpu"))
    ours = _tpr(detector, wfpc2_frame(shared_data / "real"))
    assert ours[0] > lacosmic_tprs["hst_wfpc2"][0] + 0.3


def test_default_matches_lacosmic_at_fpr_1e3_on_m51(shared_data, lacosmic_tprs):
    """Measured: default 0.969 vs LA-Cosmic 0.967 at FPR 1e-3 on M51 (at 1e-4: 0.92 vs 0.967). The
    previous default reached 0.70; this guards the galaxy-core and bright-hit fix (results/local_background)."""
    detector = NetworkDetector(load_detector("default", device="cpu"))
    ours = _tpr(detector, m51_frame(shared_data / "real"))
    assert ours[1] >= lacosmic_tprs["kpno_m51"][1]
    assert ours[0] > 0.85


def test_readme_main_job_uses_the_default_model(tmp_path, capsys):
    assert main(["detect", "--sample", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "saao_a8280271.fits.fz[1:SCI]" in out and "CR pixels" in out
    with fits.open(tmp_path / "saao_a8280271_crmask.fits") as hdul:
        assert hdul["CRMASK"].header["CRMODEL"].startswith("default")
        assert 10 < hdul["CRMASK"].data.sum() < 5000  # real hits in a 520 x 536 raw frame, not noise
        assert hdul["CRMASK"].data[:, 528:].sum() == 0  # overscan (outside TRIMSEC [17:528,1:520])
