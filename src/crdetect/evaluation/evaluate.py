"""``crdetect evaluate``: score runs and baselines on the same test set and real frames, write table,
curves, figures and an HTML report."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._optional import require
from ..baselines import Detector, LACosmicDetector, NetworkDetector, make_baselines
from ..inference import load_detector
from .benchmark import (
    iterate_patches,
    read_run,
    real_frame_groups,
    results_rows,
    score_detectors,
    write_results,
)
from .plots import plot_prediction_maps, plot_roc_pr, plot_training_curves, write_report

logger = logging.getLogger(__name__)


def evaluate(runs: list[str], data_dir: str | Path | None, out_dir: str | Path, baselines: list[str],
             real_root: str | Path | None = None, max_val_patches: int | None = None,
             max_test_patches: int | None = None, device: str = "auto", progress: bool = True,
             source_frames_per_kind: int = 0, source_veto: str = "on", sources_seed: int = 0) -> list[dict]:
    """Evaluate every run directory (or checkpoint) and baseline; returns the table rows.

    With ``source_frames_per_kind`` > 0 the detectors are also scored for false detections on trailed and
    elongated sources (:mod:`crdetect.evaluation.sources`): ``sources.md`` and ``sources.csv``.
    ``sources_seed`` picks those frames (0, the default, is the set the shipped models were judged on; another
    seed is a fresh set of the same kinds). ``source_veto`` scores the networks with the source veto
    (:mod:`crdetect.veto`; ``"on"``, as ``crdetect detect`` runs them), without it (``"off"``) or both ways
    (``"both"``: rows ``NAME`` and ``NAME-noveto``).
    """
    if source_veto not in ("on", "off", "both"):
        raise ValueError(f"source_veto must be 'on', 'off' or 'both', got {source_veto!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    infos = {info.name: info for info in (read_run(r) for r in runs)}
    vetoes = {"on": [(True, "")], "off": [(False, "")], "both": [(True, ""), (False, "-noveto")]}[source_veto]
    detectors: list[Detector] = [NetworkDetector(load_detector(info.checkpoint, device=device, source_veto=veto,
                                                               precision="float32"),
                                                 name=name + suffix, tile=None)
                                 for name, info in infos.items() for veto, suffix in vetoes]
    infos.update({name + suffix: info for name, info in list(infos.items()) for _, suffix in vetoes if suffix})
    detectors += make_baselines(baselines)
    extra = {}
    if source_frames_per_kind:
        extra[f"False detections on sources ({source_frames_per_kind} simulated frames per kind)"] = \
            _evaluate_sources(detectors, source_frames_per_kind, out, progress, sources_seed)
    if data_dir is None and real_root is None:
        write_report(out, "", [], notes=f"runs: {', '.join(infos)}; baselines: {', '.join(baselines) or 'none'}",
                     extra_tables=extra)
        return []
    val, test, curves = {}, {}, {}
    if data_dir is not None:
        data = Path(data_dir)
        val = score_detectors(detectors, iterate_patches(data / "val.h5", max_val_patches), progress, "validation")
        test = score_detectors(detectors, iterate_patches(data / "test.h5", max_test_patches), progress, "test")
        curves["test"] = {name: s.accumulator.curves() for name, s in test.items()}
        plot_roc_pr(curves["test"], out / "roc_pr_test.png", "(simulated test set)")
    real = {}
    if real_root is not None:
        for group, frames in real_frame_groups(real_root).items():
            real[group] = score_detectors(detectors, frames, progress, group)
            curves[group] = {name: s.accumulator.curves() for name, s in real[group].items()}
            plot_roc_pr(curves[group], out / f"roc_pr_{group}.png", f"({group})")
    rows = results_rows(infos, val, test, real)
    write_results(rows, curves, out)
    figures = sorted(out.glob("roc_pr_*.png"))
    if any(info.metrics for info in infos.values()):
        figures += plot_training_curves({n: i.metrics for n, i in infos.items() if i.metrics}, out)
    if data_dir is not None:
        figures.append(_prediction_figure(detectors, Path(data_dir) / "test.h5", out / "prediction_maps.png"))
        figures += _activation_figures(detectors, Path(data_dir) / "test.h5", out)
    write_report(out, (out / "results.md").read_text(), figures, extra_tables=extra,
                 notes=f"runs: {', '.join(infos)}; baselines: {', '.join(baselines) or 'none'}; data: {data_dir}; "
                       f"real frames: {real_root}")
    return rows


def _evaluate_sources(detectors, frames_per_kind: int, out: Path, progress: bool, seed: int = 0) -> str:
    """Score false detections on trailed/elongated sources; writes sources.md and sources.csv."""
    import csv
    from dataclasses import asdict

    from .sources import evaluate_sources, sources_table

    rows = evaluate_sources(detectors, frames_per_kind, seed=seed, progress=progress)
    table = sources_table(rows)
    (out / "sources.md").write_text(f"False detections on sources ({frames_per_kind} simulated 1024 x 1024 frames "
                                    f"per kind, seed {seed}; crdetect.evaluation.sources)\n\n{table}\n")
    with open(out / "sources.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    return table


def default_activation_layers(model) -> list[str]:
    """Blocks shown in activation maps: first encoder block, the bottleneck, the last decoder block."""
    if hasattr(model, "conv_more"):  # TransUNet: CNN stem, tokens back as a map, last decoder block
        return ["encoder.0", "conv_more", f"decoder.{len(model.decoder) - 1}"]
    return ["encoder.0", f"encoder.{len(model.encoder) - 1}", f"decoder.{len(model.decoder) - 1}"]


#: The depths at which the study shows activation maps (its layers 5, 14, 21 and 31).
STUDY_DEPTHS = (5, 14, 21, 31)


def layers_at_depths(model, x, depths: tuple[int, ...] = STUDY_DEPTHS) -> list[str]:
    """The names of the layers at ``depths`` (1-based) in the order a forward pass of ``x`` runs the network's
    leaf modules (convolutions, norms, activations, pooling...: the layers a Keras model lists; a BatchNorm folded
    for inference is an identity in its place, so the count is the same), the last layer for a depth past the end.
    Layers that return no single map (attention's tuples) are skipped."""
    import torch

    from .plots import forward_with_hooks

    order: list[str] = []

    def record(name):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4 and name not in order:
                order.append(name)
        return hook

    forward_with_hooks(model, x, {name: record(name) for name, module in model.named_modules()
                                  if name and not list(module.children())})
    return list(dict.fromkeys(order[min(depth, len(order)) - 1] for depth in depths))


def _most_cr_patch(test_h5: Path):
    h5py = require("h5py", "train", "reading and writing benchmark patches (HDF5)")

    with h5py.File(test_h5, "r") as f:
        best = int(np.argmax(f["mask"][:].reshape(f["mask"].shape[0], -1).sum(axis=1)))
    for i, sample in enumerate(iterate_patches(test_h5)):
        if i == best:
            return sample
    raise RuntimeError("empty test set")


def _activation_figures(detectors, test_h5: Path, out: Path) -> list[Path]:
    """Activation maps (forward hooks) of the first U-Net-like and the first TransUNet run."""
    import torch

    from .plots import activation_maps, plot_activation_maps

    sample = _most_cr_patch(test_h5)
    image = sample.image
    figures, seen = [], set()
    for d in detectors:
        if not isinstance(d, NetworkDetector):
            continue
        model = d.detector.model
        family = "transunet" if hasattr(model, "conv_more") else "unet"
        if family in seen:
            continue
        seen.add(family)
        x = torch.from_numpy(d.detector.preprocessing.normalise(image, sample.scaling))[None, None]
        x = x.to(d.detector.device).contiguous(memory_format=d.detector.memory_format)
        maps = activation_maps(model, x, default_activation_layers(model))
        figures.append(plot_activation_maps(maps, image, out / f"activations_{d.name}.png",
                                            title=f"{d.name}: feature maps and mean activation"))
        # the study's figure: the maps at its depths (layers 5, 14, 21, 31 in forward order)
        layers = layers_at_depths(model, x)
        maps = activation_maps(model, x, layers)
        figures.append(plot_activation_maps(maps, image, out / f"activations_depths_{d.name}.png",
                                            title=f"{d.name}: layers {', '.join(map(str, STUDY_DEPTHS))} (forward "
                                                  f"order: {', '.join(layers)}) and their mean activation"))
    return figures


def _prediction_figure(detectors, test_h5: Path, out_path: Path) -> Path:
    """Prediction maps of every detector on the test patch with the most CR pixels."""
    sample = _most_cr_patch(test_h5)
    image, truth = sample.image, sample.truth
    predictions = {d.name: score_as_probability(d, d.score(sample.frame, sample.scaling)) for d in detectors}
    return plot_prediction_maps(image, truth, predictions, out_path)


def score_as_probability(detector: Detector, score: np.ndarray) -> np.ndarray:
    """A detector's score on the 0-1 scale of the prediction maps: our networks' logits through the sigmoid,
    LA-Cosmic's mask at its default ``sigclip``, the peers' (deepCR, Cosmic-CoNN) probabilities as they are."""
    if isinstance(detector, NetworkDetector):
        return 1 / (1 + np.exp(-np.clip(score, -50, 50)))
    if isinstance(detector, LACosmicDetector):
        return (score >= detector.threshold).astype(np.float32)
    return np.clip(score, 0, 1)
