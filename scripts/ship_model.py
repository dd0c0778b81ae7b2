"""Copy a trained run into the package as a shipped model, with its model card.

    python scripts/ship_model.py RUN_DIR NAME --card-notes results/NAME_card_notes.md

Re-saves ``RUN_DIR/best.pt`` as ``src/crdetect/weights/NAME.pt`` (crdetect checkpoint format, with the
run's config, metrics and the shipped name) and writes ``src/crdetect/weights/NAME.md`` from the run's
config and metrics plus the notes file (measured test metrics, known failure modes).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from crdetect import count_parameters, load_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "crdetect" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--card-notes", type=Path, required=True)
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the file)")
    parser.add_argument("--trained-on", default=None, help="what the model was trained on, for `crdetect models`")
    parser.add_argument("--test", default=None, help='JSON of its test numbers, e.g. \'{"dice": 0.95}\', '
                                                     "for `crdetect models`")
    args = parser.parse_args()
    model, info = load_checkpoint(args.run / "best.pt")
    with open(args.run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    WEIGHTS.mkdir(exist_ok=True)
    extra = {"shipped_name": args.name, "epochs_trained": len(rows)}
    if args.trained_on:
        extra["trained_on"] = args.trained_on
    if args.test:
        extra["test"] = json.loads(args.test)
    save_checkpoint(WEIGHTS / f"{args.name}.pt", model, info.preprocessing, info.threshold, info.training_config,
                    info.metrics, extra=extra, half=args.half)
    cfg = info.training_config
    window = info.preprocessing.local_background
    background = f"local background (approximate {window} px sliding median)" if window else "sky level"
    card = [f"# crdetect model card: `{args.name}`", "",
            f"- architecture: `{info.model_name}` with {cfg.get('model_kwargs')} ({count_parameters(model):,} parameters)",
            f"- detection threshold (maximises validation Dice): {info.threshold:.4f}",
            f"- input preprocessing: {info.preprocessing.to_dict()} (unit-free: {background} subtracted, divided "
            "by the pixel noise, asinh-stretched; ADU or electrons, any gain)",
            f"- training: `crdetect train` with {{model: {cfg.get('model')}, loss: {cfg.get('loss')}, lr: {cfg.get('lr')}, "
            f"optimizer: {cfg.get('optimizer')}, batch: {cfg.get('batch_size')}, crop: {cfg.get('crop')}, "
            f"init_from: {cfg.get('init_from')}, pedestal_prob: {cfg.get('pedestal_prob', 0)}, "
            f"extra_hits: {cfg.get('extra_hits', 0)}, hit_zoom: {cfg.get('hit_zoom', 1)}, "
            f"hit_charge: {cfg.get('hit_charge', [0.5, 50.0])}, line_prob: {cfg.get('line_prob', 0)}}}, "
            f"{len(rows)} epochs on `{cfg.get('data')}`",
            f"- validation at the best epoch: {info.metrics}", "", args.card_notes.read_text()]
    (WEIGHTS / f"{args.name}.md").write_text("\n".join(card) + "\n")
    print(f"shipped {WEIGHTS / (args.name + '.pt')} ({(WEIGHTS / (args.name + '.pt')).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
