"""Figures of the study: training curves, ROC/PR, prediction maps, activation maps; an HTML report."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .._optional import require


def _plt():
    matplotlib = require("matplotlib", "plots", "figures")
    matplotlib.use("Agg")  # files only; no display needed
    return require("matplotlib.pyplot", "plots", "figures")


def _zscale(image: np.ndarray) -> tuple[float, float]:
    from astropy.visualization import ZScaleInterval

    finite = image[np.isfinite(image)]
    return ZScaleInterval().get_limits(finite) if finite.size else (0.0, 1.0)


def plot_training_curves(runs: dict[str, list[dict]], out_dir: str | Path) -> list[Path]:
    """loss_curves.png (train and validation loss per epoch) and dice_curves.png (validation Dice)."""
    plt = _plt()
    out = Path(out_dir)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (name, rows) in enumerate(runs.items()):
        epochs = [int(r["epoch"]) for r in rows]
        color = f"C{i % 10}"
        ax.plot(epochs, [float(r["train_loss"]) for r in rows], "-", color=color, label=f"{name} train")
        ax.plot(epochs, [float(r["val_loss"]) for r in rows], "--", color=color, label=f"{name} val")
    ax.set(xlabel="epoch", ylabel="loss (1 - Dice + BCE) / 2", title="Training and validation loss")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths = [out / "loss_curves.png"]
    fig.savefig(paths[0], dpi=200)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (name, rows) in enumerate(runs.items()):
        ax.plot([int(r["epoch"]) for r in rows], [float(r["val_dice"]) for r in rows], "-o", ms=3,
                color=f"C{i % 10}", label=name)
    ax.axhline(0.85, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="epoch", ylabel="validation Dice (threshold 0.5)", title="Validation Dice", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "dice_curves.png")
    fig.savefig(paths[1], dpi=200)
    plt.close(fig)
    return paths


def plot_roc_pr(curves: dict[str, dict], out_path: str | Path, title: str = "") -> Path:
    """ROC (log FPR) and precision-recall curves of several detectors side by side."""
    plt = _plt()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    for i, (name, c) in enumerate(curves.items()):
        roc.plot(np.clip(c["fpr"], 1e-7, 1), c["tpr"], color=f"C{i % 10}", label=name)
        pr.plot(c["recall"], c["precision"], color=f"C{i % 10}", label=name)
    for f in (1e-4, 1e-3):
        roc.axvline(f, color="gray", lw=0.7, ls=":")
    roc.set(xscale="log", xlim=(1e-6, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
            title=f"ROC {title}")
    pr.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision", title=f"Precision-recall {title}")
    roc.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_path, dpi=200)
    plt.close(fig)
    return Path(out_path)


def plot_prediction_maps(image: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray],
                         out_path: str | Path, threshold: float = 0.5) -> Path:
    """Image (zscale), truth mask, and each detector's probability (or mask) side by side."""
    plt = _plt()
    n = 2 + len(predictions)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.3))
    vmin, vmax = _zscale(image)
    axes[0].imshow(image, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
    axes[0].set_title("image (zscale)")
    axes[1].imshow(truth, origin="lower", cmap="gray")
    axes[1].set_title("truth")
    for ax, (name, pred) in zip(axes[2:], predictions.items()):
        ax.imshow(pred, origin="lower", cmap="magma", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out_path, dpi=200)
    plt.close(fig)
    return Path(out_path)


def activation_maps(model, x, layer_names: list[str]) -> dict[str, np.ndarray]:
    """Feature maps (C, H, W) of the named sub-modules for one input (1, 1, H, W), via forward hooks."""
    modules = dict(model.named_modules())
    missing = [n for n in layer_names if n not in modules]
    if missing:
        raise ValueError(f"no layers {missing} in the model; some valid names: {list(modules)[1:12]}")
    captured: dict[str, np.ndarray] = {}
    forward_with_hooks(model, x, {n: lambda _m, _i, out, n=n: captured.__setitem__(
        n, out[0].detach().float().cpu().numpy()) for n in layer_names})
    return captured


def forward_with_hooks(model, x, hooks: dict) -> None:
    """One forward pass of ``x`` in eval and inference mode with forward ``hooks`` (by module name) on the model's
    modules, removed afterwards."""
    import torch

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook) for name, hook in hooks.items()]
    try:
        model.eval()
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()


def plot_activation_maps(maps: dict[str, np.ndarray], image: np.ndarray, out_path: str | Path, title: str = "",
                         channels: int = 4) -> Path:
    """For each layer: its first ``channels`` feature maps and the mean activation map."""
    plt = _plt()
    rows = len(maps)
    fig, axes = plt.subplots(rows, channels + 2, figsize=(2.0 * (channels + 2), 2.1 * rows), squeeze=False)
    vmin, vmax = _zscale(image)
    for r, (name, fmap) in enumerate(maps.items()):
        axes[r, 0].imshow(image, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
        axes[r, 0].set_ylabel(name, fontsize=7)
        for c in range(channels):
            axes[r, c + 1].imshow(fmap[c % fmap.shape[0]], origin="lower", cmap="viridis")
            axes[r, c + 1].set_title(f"ch {c % fmap.shape[0]}", fontsize=7)
        axes[r, -1].imshow(fmap.mean(axis=0), origin="lower", cmap="viridis")
        axes[r, -1].set_title("mean", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=150)
    plt.close(fig)
    return Path(out_path)


def _html_table(table_markdown: str) -> str:
    """A Markdown table (header row first) as an HTML table."""
    lines = [line for line in table_markdown.strip().splitlines() if line.startswith("|") and not line.startswith("|---")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return "<table>" + "".join(
        "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>" for c in row) + "</tr>"
        for i, row in enumerate(cells)) + "</table>"


def write_report(out_dir: str | Path, table_markdown: str, figures: list[Path], notes: str = "",
                 extra_tables: dict[str, str] | None = None) -> Path:
    """report.html: the results table, further titled tables (Markdown) and every figure on one page."""
    out = Path(out_dir)
    table = _html_table(table_markdown) if table_markdown.strip() else ""
    for title, markdown in (extra_tables or {}).items():
        table += f"<h2>{html.escape(title)}</h2>" + _html_table(markdown)
    imgs = "".join(f'<figure><img src="{html.escape(Path(f).name)}" style="max-width:100%"><figcaption>'
                   f'{html.escape(Path(f).stem)}</figcaption></figure>' for f in figures)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>crdetect report</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>"
            f"<h1>crdetect evaluation</h1><p>{html.escape(notes)}</p>{table}{imgs}</body></html>")
    path = out / "report.html"
    path.write_text(page)
    return path
