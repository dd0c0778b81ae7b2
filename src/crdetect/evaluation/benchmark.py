"""Score many detectors on the same test data through one confusion-count path.

Networks (runs or checkpoints) and baselines (LA-Cosmic, deepCR, Cosmic-CoNN) are all
:class:`crdetect.baselines.Detector` objects; every one is fed the same images and scored by the same
:class:`crdetect.metrics.ScoreAccumulator`.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._optional import require
from ..baselines import Detector
from ..frame import LabelledFrame
from ..metrics import ScoreAccumulator
from ..preprocessing import FrameStatistics

logger = logging.getLogger(__name__)

FPRS = (1e-4, 5e-4, 1e-3)


@dataclass
class Scored:
    """Accumulated scores of one detector on one data set, with its run time."""

    accumulator: ScoreAccumulator
    seconds: float = 0.0
    pixels: int = 0

    @property
    def mpix_per_s(self) -> float:
        return self.pixels / 1e6 / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class RunInfo:
    """What a training run directory says about its model."""

    name: str
    checkpoint: Path
    model_name: str
    model_kwargs: dict
    params: int
    metrics: list[dict] = field(default_factory=list)
    transformer: dict = field(default_factory=dict)  # heads, layers, MLP width of TransUNets

    @property
    def epochs_to_dice_085(self) -> int | None:
        """First epoch whose validation Dice exceeds 0.85 (None if never)."""
        for row in self.metrics:
            if float(row["val_dice"]) > 0.85:
                return int(row["epoch"])
        return None

    @property
    def best_val_dice(self) -> float:
        return max((float(r["val_dice"]) for r in self.metrics), default=float("nan"))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run directory's ``metrics.csv`` (one per epoch; none when it has no such file)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_run(run_dir: str | Path) -> RunInfo:
    """Read ``best.pt`` (or ``last.pt``) and ``metrics.csv`` of a run directory, or a bare checkpoint."""
    from ..checkpoint import load_checkpoint
    from ..models import count_parameters

    path = Path(run_dir)
    checkpoint = path if path.is_file() else (path / "best.pt" if (path / "best.pt").exists() else path / "last.pt")
    model, info = load_checkpoint(checkpoint)
    metrics = read_metrics(path if path.is_dir() else path.parent)
    name = path.name if path.is_dir() else path.stem
    transformer = {k: getattr(model, k) for k in ("num_heads", "num_layers", "mlp_dim") if hasattr(model, k)}
    return RunInfo(name, checkpoint, info.model_name, info.model_kwargs, count_parameters(model), metrics, transformer)


def iterate_patches(h5_path: str | Path, max_patches: int | None = None, seed: int = 0):
    """Yield a :class:`~crdetect.frame.LabelledFrame` for each patch of a benchmark file (the frame's sky and noise
    from the patch's metadata)."""
    h5py = require("h5py", "train", "reading and writing benchmark patches (HDF5)")

    from ..data.augment import random_subset

    with h5py.File(h5_path, "r") as f:
        indices = random_subset(np.arange(f["image"].shape[0]), max_patches, seed)
        meta = {k: f[f"meta/{k}"][:] for k in ("frame_sky", "frame_sigma", "gain", "read_noise")}
        for i in indices:
            gain = float(meta["gain"][i])
            statistics = FrameStatistics(float(meta["frame_sky"][i]), float(meta["frame_sigma"][i]))
            yield LabelledFrame.of(f"patch {i}", f["image"][i], f["mask"][i] > 0, f["ignore"][i] > 0, gain,
                                   float(meta["read_noise"][i]), 1.6e5 / gain, statistics=statistics)


def score_detectors(detectors: list[Detector], samples, progress: bool = True, desc: str = "scoring") -> dict[str, Scored]:
    """Feed every sample to every detector; returns name -> :class:`Scored`."""
    from tqdm import tqdm

    results = {d.name: Scored(ScoreAccumulator(d.threshold, hits=True)) for d in detectors}
    for sample in tqdm(samples, desc=desc, unit="image", disable=not progress):
        for detector in detectors:
            started = time.perf_counter()
            scores = detector.score(sample.frame, sample.scaling)
            scored = results[detector.name]
            scored.seconds += time.perf_counter() - started
            scored.pixels += sample.image.size
            scored.accumulator.update(scores, sample.truth, sample.ignore)
    return results



def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.4f}"
    return str(value)


def results_rows(runs: dict[str, RunInfo], val: dict[str, Scored], test: dict[str, Scored],
                 real: dict[str, dict[str, Scored]]) -> list[dict]:
    """One row per detector in the layout of the study's table, plus real-frame columns."""
    rows = []
    # every detector scored anywhere; the test columns stay empty without a test set (they once took the first
    # real frame's numbers)
    names = list(dict.fromkeys([*test, *(name for by_detector in real.values() for name in by_detector)]))
    for name in names:
        run = runs.get(name)
        hp = run.transformer if run else {}
        row = {"model": name,
               "arch": run.model_name if run else "baseline",
               "heads": hp.get("num_heads", "-"), "layers": hp.get("num_layers", "-"), "mlp": hp.get("mlp_dim", "-"),
               "params": run.params if run else "-",
               "val_dice": val[name].accumulator.counts.dice if name in val else None,
               "val_tpr@1e-4": val[name].accumulator.tpr_at_fpr(1e-4) if name in val else None}
        scored = test.get(name)
        accumulator = scored.accumulator if scored else None
        row["test_dice"] = accumulator.counts.dice if scored else None
        for f in FPRS:
            row[f"test_tpr@{f:g}"] = accumulator.tpr_at_fpr(f) if scored else None
        row["test_prec@recall0.95"] = accumulator.precision_at_recall(0.95) if scored else None
        row["test_hit_recall"] = accumulator.hits.recall if scored else None
        row["test_false_hits/Mpix"] = accumulator.hits.false_per_mpix if scored else None
        row["epochs_to_val_dice>0.85"] = run.epochs_to_dice_085 if run else None
        row["scoring_mpix_per_s"] = scored.mpix_per_s if scored else None
        for frame, by_detector in real.items():
            if name in by_detector:
                acc = by_detector[name].accumulator
                row[f"{frame}_tpr@1e-4"] = acc.tpr_at_fpr(1e-4)
                row[f"{frame}_tpr@1e-3"] = acc.tpr_at_fpr(1e-3)
                row[f"{frame}_hit_recall"] = acc.hits.recall
                row[f"{frame}_false_hits/Mpix"] = acc.hits.false_per_mpix
        rows.append(row)
    return rows


def write_results(rows: list[dict], curves: dict, out_dir: str | Path) -> None:
    """``results.csv``, ``results.md`` and ``curves.json`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in columns} for row in rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(k)) for k in columns) + " |" for row in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "curves.json").write_text(json.dumps(curves))


def real_frame_groups(root: str | Path) -> dict[str, list]:
    """The real-frame benchmarks, each a list of frames scored pooled: every labelled frame on its own
    (``hst_wfpc2``, ``kpno_m51``) and the five frames with held-out hits together (``injected``)."""
    from ..data.real import injected_frames, labelled_real_frames

    groups = {frame.name: [frame] for frame in labelled_real_frames(root)}
    groups["injected"] = injected_frames(root)
    return groups


def tpr_at_fprs(detector: Detector, samples, fprs=(1e-4, 1e-3)) -> list[float]:
    """TPR of ``detector`` at each false-positive rate of ``fprs``, pixels pooled over ``samples``."""
    accumulator = score_detectors([detector], samples, progress=False)[detector.name].accumulator
    return [accumulator.tpr_at_fpr(fpr) for fpr in fprs]
