"""``crdetect study``: train every row of the study, score them with the baselines, write the study's table.

One YAML file (``configs/study.yaml``, shipped as ``crdetect/configs/study.yaml``) lists the rows: a model,
optionally its own training settings, and the study's published numbers. Each row trains into
``OUT/runs/NAME`` (resumable: a killed study continues where it stopped, finished rows are skipped); the
splits are loaded once for all rows. :func:`crdetect.evaluation.evaluate.evaluate` then scores the runs
and the baselines on the same patches (``OUT/evaluation``: its table, curves, figures, report), and
``OUT/results.csv`` / ``results.md`` give the study's layout with the published numbers in ``seed_*``
columns beside ours.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .._optional import require
from ..errors import InputError
from .config import TrainConfig

logger = logging.getLogger(__name__)

#: The study's configuration shipped with the package (``configs/study.yaml`` in the repository).
DEFAULT_STUDY = Path(__file__).resolve().parents[1] / "configs" / "study.yaml"

#: The study's columns: ours, then the published ones (``seed_*``).
COLUMNS = ["model", "heads", "layers", "mlp", "params", "val_dice", "val_tpr@1e-4", "test_dice", "test_tpr@1e-4",
           "epochs_to_val_dice>0.85", "epochs", "patches_seen", "train_minutes", "seed_params", "seed_val_dice",
           "seed_val_tpr", "seed_test_dice", "seed_test_tpr"]
_PUBLISHED = {"params": "seed_params", "val_dice": "seed_val_dice", "val_tpr": "seed_val_tpr",
              "test_dice": "seed_test_dice", "test_tpr": "seed_test_tpr"}


@dataclass
class StudyRow:
    """One row of the study: a run name, its training config, the published numbers."""

    name: str
    config: TrainConfig
    published: dict = field(default_factory=dict)
    default: bool = True


@dataclass
class Study:
    rows: list[StudyRow]
    baselines: list[str]


def load_study(path: str | Path | None = None, data: str | Path = "", **overrides) -> Study:
    """Read a study YAML file; ``overrides`` (e.g. epochs, crop, device from the command line; None means
    unset) apply to every row's :class:`TrainConfig` after the file's settings."""
    yaml = require("yaml", "train", "training configurations (YAML)")
    path = Path(path) if path else DEFAULT_STUDY
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - {"train", "rows", "baselines"}
    if unknown or not spec.get("rows"):
        raise ValueError(f"{path}: a study has `train`, `rows` and `baselines`; found {sorted(spec)}")
    known = {f.name for f in fields(TrainConfig)}
    set_overrides = {k: v for k, v in overrides.items() if v is not None}
    rows, names = [], set()
    for entry in spec["rows"]:
        settings = {**(spec.get("train") or {}), **(entry.get("train") or {}), "model": entry["model"]}
        bad = set(settings) - known
        if bad:
            raise ValueError(f"{path}: unknown training keys {sorted(bad)}; valid keys: {sorted(known)}")
        name = entry.get("name", entry["model"])
        if name in names:
            raise ValueError(f"{path}: two rows are named {name!r}")
        names.add(name)
        config = TrainConfig(**{**settings, **set_overrides, "data": str(data)})
        rows.append(StudyRow(name, config, dict(entry.get("published") or {}), bool(entry.get("default", True))))
    return Study(rows, list(spec.get("baselines") or []))


def select_rows(study: Study, names: list[str] | None) -> list[StudyRow]:
    """The rows named (in the file's order), or every default row."""
    if not names:
        return [row for row in study.rows if row.default]
    by_name = {row.name: row for row in study.rows}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"no study row named {', '.join(missing)}; rows: {', '.join(by_name)}")
    return [row for row in study.rows if row.name in names]


def run_study(study: Study, out_dir: str | Path, models: list[str] | None = None, time_budget_min: float | None = None,
              together: bool = False, baselines: list[str] | None = None, real_root: str | Path | None = None,
              max_test_patches: int | None = None, progress: bool = True, train: bool = True,
              score: bool = True) -> list[dict]:
    """Train the selected rows, evaluate them with the baselines and write the study's table.

    ``time_budget_min`` is shared equally by the rows (each stops after the epoch that exceeds its share).
    With ``together`` rows that agree on data and augmentation are trained on the same batches
    (:func:`crdetect.training.loop.train_together`). With ``train=False`` the runs already in
    ``OUT/runs`` (trained on another machine, say) are only scored; with ``score=False`` the rows are only trained
    (a GPU window). Returns the table's rows (none when not scored).
    """
    from ..evaluation.evaluate import evaluate

    out = Path(out_dir)
    rows = select_rows(study, models)
    if time_budget_min is not None:
        rows = [replace(row, config=replace(row.config, time_budget_min=time_budget_min / len(rows))) for row in rows]
    if train:
        _train_rows(rows, out, together, progress)
        if not score:
            return []
    else:
        missing = [row.name for row in rows if not (out / "runs" / row.name / "best.pt").is_file()]
        if missing:
            raise InputError(f"no trained run in {out / 'runs'} for {', '.join(missing)}: train them first "
                             "(crdetect study without --no-train)")
        # the table describes how the runs were trained: their own config.yaml, read with our data
        rows = [_as_trained(row, out / "runs" / row.name / "config.yaml") for row in rows]
    evaluation = out / "evaluation"
    baseline_names = study.baselines if baselines is None else baselines
    first = rows[0].config
    # the study compares networks, as the paper did: no source veto after them (crdetect.veto)
    results = evaluate([str(out / "runs" / row.name) for row in rows], first.data, evaluation, baseline_names,
                       real_root, first.max_val_patches, max_test_patches, first.device, progress,
                       source_veto="off")
    table = study_table(rows, results, out)
    write_study_table(table, rows, out)
    return table


def _train_rows(rows: list[StudyRow], out: Path, together: bool, progress: bool) -> None:
    """Train the rows into ``out/runs/NAME``, the splits loaded once per group of rows sharing data."""
    from ..device import resolve_device
    from .loop import TrainingData, _preprocessing_of, data_key, train_together

    groups: dict[tuple, list[StudyRow]] = {}
    for row in rows:
        groups.setdefault(data_key(row.config), []).append(row)
    for members in groups.values():
        first = members[0].config
        data = TrainingData(first, _preprocessing_of(replace(first)), resolve_device(first.device))
        batches = [members] if together else [[row] for row in members]
        for batch in batches:
            logger.info("training %s", ", ".join(row.name for row in batch))
            train_together([row.config for row in batch], [out / "runs" / row.name for row in batch], progress,
                           data=data)
        del data  # free the splits before the next group's


def _as_trained(row: StudyRow, path: Path) -> StudyRow:
    """``row`` with the training settings its run recorded (``config.yaml``), keeping this study's data,
    validation size and device."""
    if not path.is_file():
        return row
    config = TrainConfig.from_yaml(path, data=row.config.data, max_val_patches=row.config.max_val_patches,
                                   device=row.config.device)
    return replace(row, config=config)


def _training_totals(run_dir: Path) -> tuple[int | None, int | None, float | None]:
    """Epochs, patches seen and training minutes of a run from its metrics.csv."""
    from ..evaluation.benchmark import read_metrics

    if not (run_dir / "metrics.csv").exists():
        return None, None, None
    metrics = read_metrics(run_dir)
    if not metrics:
        return 0, 0, 0.0
    patches = metrics[-1].get("patches_seen")
    return (len(metrics), int(patches) if patches not in (None, "") else None,
            sum(float(m["seconds"]) for m in metrics) / 60)


def study_table(rows: list[StudyRow], results: list[dict], out: Path) -> list[dict]:
    """The study's layout from the evaluation's rows: ours, then the published numbers."""
    published = {row.name: row.published for row in rows}
    table = []
    for result in results:
        name = result["model"]
        line = {"model": name, "heads": result.get("heads"), "layers": result.get("layers"), "mlp": result.get("mlp"),
                "params": result.get("params"), "val_dice": result.get("val_dice"),
                "val_tpr@1e-4": result.get("val_tpr@1e-4"), "test_dice": result.get("test_dice"),
                "test_tpr@1e-4": result.get("test_tpr@0.0001"),
                "epochs_to_val_dice>0.85": result.get("epochs_to_val_dice>0.85")}
        epochs, patches, minutes = _training_totals(out / "runs" / name) if name in published else (None, None, None)
        line.update({"epochs": epochs, "patches_seen": patches, "train_minutes": minutes})
        line.update({column: published.get(name, {}).get(key) for key, column in _PUBLISHED.items()})
        table.append(line)
    return table


@dataclass(frozen=True)
class Convergence:
    """Where a run stands against the study's convergence rule (:func:`convergence`)."""

    crops_seen: int
    best_val_dice: float
    gain_last_quarter: float  # best validation Dice in the last quarter of the crops minus the best before it
    converged: bool


def convergence(metrics: list[dict], min_crops: int = 100_000, quarter: float = 0.25,
                min_gain: float = 0.001) -> Convergence:
    """The study's convergence rule (results/study/README.md, written before the runs): a run has converged when it
    has seen at least ``min_crops`` crops and its best validation Dice (fixed threshold 0.5, the ``val_dice`` of
    ``metrics.csv``) in the last ``quarter`` of its crops is less than ``min_gain`` above its best before them."""
    if not metrics:
        return Convergence(0, float("nan"), float("nan"), False)
    crops = [int(row["patches_seen"]) for row in metrics]
    dice = [float(row["val_dice"]) for row in metrics]
    start = crops[-1] * (1 - quarter)
    before = [d for c, d in zip(crops, dice) if c <= start]
    after = [d for c, d in zip(crops, dice) if c > start]
    if not before:  # the whole run lies in its last quarter: too few validations to tell
        return Convergence(crops[-1], max(dice), float("nan"), False)
    gain = max(after) - max(before)
    return Convergence(crops[-1], max(dice), gain, crops[-1] >= min_crops and gain < min_gain)


def _cell(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_study_table(table: list[dict], rows: list[StudyRow], out: Path) -> None:
    """``results.csv`` and ``results.md`` (with the training settings the numbers come from)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: line.get(k) for k in COLUMNS} for line in table)
    first = rows[0].config
    settings = (f"data {first.data}; {first.loss}, {first.optimizer} lr {first.lr}, batch {first.batch_size}, "
                f"crop {first.crop or 'none'}, up to {first.epochs} epochs"
                + (f", {first.time_budget_min:.1f} min per row" if first.time_budget_min else "")
                + (f", {first.max_train_patches} training patches" if first.max_train_patches else ""))
    lines = ["# The study", "", f"Ours beside the study's published numbers (seed_*). Training: {settings}. "
             "TPR at 0.01 % FPR. Baselines (no training) are scored on the same patches.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(line.get(k)) for k in COLUMNS) + " |" for line in table]
    lines += ["", "Curves, prediction and activation maps, ROC/PR and the report: evaluation/report.html."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
