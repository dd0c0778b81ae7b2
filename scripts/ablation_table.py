"""The Cosmic-CoNN ablation table (issue #25) from the runs of results/cosmic_conn_ablation/run.sh.

For each ablation row: the crops (and pixels) seen when its validation Dice (threshold 0.5) first reached 0.85 and
other levels, its last validation Dice, and the precision at 95 % recall of its best checkpoint (lowest validation
loss) on the LCO-like test set and the two Gemini GMOS-like ones; then the GroupNorm-versus-BatchNorm TransUNet rows,
and figures: validation Dice over pixels seen, prediction maps per telescope class (image, label, U-Net,
TransUNet) and activation maps at the study's depths on an LCO-like patch.

    python scripts/ablation_table.py --runs results/cosmic_conn_ablation/runs --data data/lco-small \
        --data-256 data/lco-small-256 --out results/cosmic_conn_ablation
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
from pathlib import Path

import numpy as np

from crdetect.baselines import NetworkDetector
from crdetect.device import describe_cpu
from crdetect.evaluation.benchmark import iterate_patches, read_metrics, score_detectors
from crdetect.inference.loader import load_detector

ABLATION_ROWS = ("deepcr", "deepcr_mw", "deepcr_1024", "deepcr_gn", "deepcr_1024_gn", "cosmic_conn")
NORM_ROWS = ("tunet_3_bn", "tunet_3_gn")
TEST_FILES = {"lco": "test.h5", "gemini_1x1": "test_gemini_1x1.h5", "gemini_2x2": "test_gemini_2x2.h5"}
DICE_LEVELS = (0.5, 0.7, 0.85)
#: The seed's ablation (Cosmic-CoNN, Xu et al. 2023) as issue #25 quotes it: ranges over its six rows only.
SEED_RANGES = {"epochs_to_val_dice_0.85": "2,980 (deepCR) down to 380 (Cosmic-CoNN)",
               "prec@recall0.95_lco": "89.2-93.4 %", "prec@recall0.95_gemini_1x1": "77.1-86.8 %",
               "prec@recall0.95_gemini_2x2": "83.1-94.4 %"}


def run_config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def crops_to_level(metrics: list[dict], level: float) -> int | None:
    """Crops seen at the first validation whose Dice reached ``level`` (None if none did)."""
    for row in metrics:
        if float(row["val_dice"]) >= level:
            return int(row["patches_seen"])
    return None


def run_detector(run: Path, name: str | None = None) -> NetworkDetector:
    """The run's best checkpoint in float32: OpenVINO for the U-Nets (torch's numbers, twice as fast on a CPU), torch
    for the TransUNets (their token grid follows the input size)."""
    backend = "torch" if run_config(run)["model"].startswith("tunet") else "openvino"
    return NetworkDetector(load_detector(run / "best.pt", device="cpu", precision="float32", backend=backend),
                           name=name or run.name, tile=None)


def precision_at_recall(run: Path, files: dict[str, Path], max_patches: dict[str, int | None], recall: float = 0.95):
    """Precision at ``recall`` of the run's best checkpoint on each test file."""
    detector = run_detector(run)
    scores = {}
    for name, path in files.items():
        scored = score_detectors([detector], iterate_patches(path, max_patches.get(name)), False, name)[run.name]
        scores[name] = scored.accumulator.precision_at_recall(recall)
    return scores


def table_rows(runs: Path, names, data: Path, max_patches: dict[str, int | None]) -> list[dict]:
    rows = []
    for name in names:
        run = runs / name
        if not (run / "best.pt").exists():
            logging.warning("%s has no best.pt: left out", run)
            continue
        config, metrics = run_config(run), read_metrics(run)
        side = config["crop"] or 1024
        from crdetect.models import create_model, uses_group_norm

        network = create_model(config["model"], **(config.get("model_kwargs") or {}))
        row = {"row": name, "model": config["model"], "norm": "group" if uses_group_norm(network) else "batch",
               "loss": config["loss"], "crop": side}
        for level in DICE_LEVELS:  # pixels compare crops of different sizes; the 0.85 level also in crops
            crops = crops_to_level(metrics, level)
            if level == 0.85:
                row["crops_to_val_dice_0.85"] = crops if crops is not None else f"> {metrics[-1]['patches_seen']}"
            row[f"mpix_to_val_dice_{level}"] = round(crops * side**2 / 1e6, 1) if crops is not None else "-"
        row["crops_seen"] = int(metrics[-1]["patches_seen"]) if metrics else 0
        row["mpix_seen"] = round(row["crops_seen"] * side**2 / 1e6, 1)
        row["last_val_dice"] = round(float(metrics[-1]["val_dice"]), 4) if metrics else ""
        row["best_val_dice"] = round(max(float(m["val_dice"]) for m in metrics), 4) if metrics else ""
        files = {k: data / f for k, f in TEST_FILES.items() if (data / f).exists()}
        for test, value in precision_at_recall(run, files, max_patches).items():
            row[f"prec@recall0.95_{test}"] = round(value, 4)
        rows.append(row)
    return rows


def write_table(rows: list[dict], path_csv: Path) -> str:
    if not rows:
        return "(no runs)"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def dice_curves(runs: Path, names, out_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in names:
        if not (runs / name / "metrics.csv").exists():
            continue
        side = run_config(runs / name)["crop"] or 1024
        metrics = read_metrics(runs / name)
        ax.plot([int(m["patches_seen"]) * side**2 / 1e6 for m in metrics], [float(m["val_dice"]) for m in metrics],
                marker="o", label=name)
    ax.axhline(0.85, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("pixels seen in training (Mpix)")
    ax.set_ylabel("validation Dice (threshold 0.5)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=150)
    plt.close(fig)
    return out_path


def prediction_figures(unet_run: Path, tunet_run: Path, data: Path, out: Path, side: int = 512) -> list[Path]:
    """Per telescope class, the ``side`` px window with the most labelled CR pixels of its test patches: image,
    label, the U-Net's and the TransUNet's probabilities."""
    import h5py

    from crdetect.evaluation.evaluate import score_as_probability
    from crdetect.evaluation.plots import plot_prediction_maps
    from crdetect.frame import LabelledFrame

    detectors = [run_detector(unet_run, f"{unet_run.name} (U-Net)"),
                 run_detector(tunet_run, f"{tunet_run.name} (TransUNet)")]
    figures = []
    for test_file in TEST_FILES.values():
        with h5py.File(data / test_file, "r") as f:
            kinds = f["meta/kind"][:].astype(str)
            masks = f["mask"]
            for kind in sorted(set(kinds)):
                indices = np.flatnonzero(kinds == kind)
                counts = [int(masks[i].sum()) for i in indices]
                best = int(indices[int(np.argmax(counts))])
                mask = masks[best] > 0
                # the window with the most CR pixels, on a grid of side/2 steps
                steps = range(0, mask.shape[0] - side + 1, side // 2)
                y, x = max(((y, x) for y in steps for x in steps),
                           key=lambda o: mask[o[0]:o[0] + side, o[1]:o[1] + side].sum())
                window = (slice(y, y + side), slice(x, x + side))
                whole = next(itertools.islice(iterate_patches(data / test_file), best, None))  # its gain, sky, noise
                sample = LabelledFrame.of(f"{kind} patch {best}", whole.image[window], whole.truth[window],
                                          whole.ignore[window], whole.frame.gain, whole.frame.read_noise,
                                          whole.frame.saturation, statistics=whole.statistics)
                predictions = {d.name: score_as_probability(d, d.score(sample.frame, sample.scaling))
                               for d in detectors}
                figures.append(plot_prediction_maps(sample.image, sample.truth, predictions,
                                                    out / f"prediction_{kind}.png"))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the lco-small preset (1024 px patches)")
    parser.add_argument("--data-256", type=Path, required=True, help="the same frames in 256 px patches")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-test-patches", type=int, nargs=3, default=(12, 6, 6), metavar=("LCO", "G1X1", "G2X2"),
                        help="1024 px test patches scored per file (a random subset, the same for every row)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    limits = dict(zip(TEST_FILES, args.max_test_patches))
    ablation = table_rows(args.runs, ABLATION_ROWS, args.data, limits)
    # the TransUNets' 256 px patches: 16 per 1024 px patch, the same pixels
    norms = table_rows(args.runs, NORM_ROWS, args.data_256, {k: 16 * v for k, v in limits.items()})
    text = ["# The Cosmic-CoNN ablation at CPU scale (issue #25)", "",
            f"CPU: {describe_cpu()}. Data: `crdetect simulate --preset lco-small` "
            "(LCO-like consecutive exposures, labelled from the stacks). Seed's ranges over its six rows: "
            + "; ".join(f"{k} {v}" for k, v in SEED_RANGES.items()) + ".", "",
            "## Ablation", "", write_table(ablation, out / "results.csv"), "",
            "## GroupNorm versus BatchNorm in the small TransUNet (tunet_3)", "",
            write_table(norms, out / "norm_comparison.csv"), ""]
    meta = json.loads((args.data / "meta.json").read_text())
    text += ["## The labels against the simulator's truth (`meta.json` of the data)", "",
             "| class (split) | frames | rejected | recall | recall off sources | precision | false px / Mpix |",
             "|---|---|---|---|---|---|---|"]
    text += [f"| {name} | {q['frames']} | {q['rejected_frames']} | {q['recall']:.3f} | {q['recall_off_sources']:.3f} | "
             f"{q['precision']:.3f} | {q['false_per_mpix']:.1f} |" for name, q in meta["label_quality"].items()]
    text.append("")
    figures = [dice_curves(args.runs, ABLATION_ROWS + NORM_ROWS, out / "val_dice_over_pixels.png")]
    if (args.runs / "cosmic_conn" / "best.pt").exists() and (args.runs / "tunet_3_gn" / "best.pt").exists():
        figures += prediction_figures(args.runs / "cosmic_conn", args.runs / "tunet_3_gn", args.data, out)
    text += ["Figures: " + ", ".join(f"`{p.name}`" for p in figures), ""]
    (out / "results.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
