"""Training throughput: each model alone against the full data path that feeds it (patches per second).

Per model, on one device:
- ``model alone``: a synthetic batch already on the device, forward + backward + Adam step with the study's
  loss (what the model can take);
- ``data path``: crdetect's training data path (:class:`crdetect.training.loop.TrainingData`: the split in
  memory, batches augmented on the device) feeding the same steps, with two recipes: ``study`` (sky boost,
  crops, rot90/flips: the study's rows) and ``shipped`` (also extra library hits, lines and the local
  background, as the shipped models were trained);
- on CPU also the numpy per-sample path of crdetect <= 0.3 (tests/numpy_reference.py in a DataLoader), the
  path this one replaced, with the shipped recipe;
and the ratio data path / model alone (goal on a GPU: >= 0.9). ``--together`` also times several models
trained on the same batches against one after another, ``--switches`` the bfloat16 autocast, channels-last
and torch.compile variants of the model alone (compile time printed apart). Peak memory: GPU memory on
CUDA, resident memory on CPU.

    python benchmarks/bench_train.py --quick                      # CPU, 3 models, ci-scale data
    python benchmarks/bench_train.py --device cuda --data data/paper --batch-size 128 --crop 0 \
        --switches --together --out results/bench_train_gpu.txt
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
STUDY_MODELS = ["deepcr_unet", "unet", "cosmic_conn", "att_unet", "tunet_2", "tunet_3", "tunet_4", "tunet_9",
                "tunet_5", "tunet_6"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step, batches, device: torch.device, warmup: int) -> float:
    """Seconds per batch of ``step`` over ``batches`` (an iterator), after ``warmup`` batches."""
    count, started = 0, None
    for number, batch in enumerate(batches):
        if number == warmup:
            synchronize(device)
            started = time.perf_counter()
        step(batch)
        count += number >= warmup
    synchronize(device)
    return (time.perf_counter() - started) / max(count, 1)


def make_run(name: str, config, device: torch.device, out: Path, **switches):
    from crdetect.training.loop import ModelRun, _preprocessing_of

    run_config = replace(config, model=name, **switches)
    run = ModelRun(run_config, out / f"{name}-{len(list(out.iterdir()))}", device, _preprocessing_of(run_config))
    run.start_epoch()
    return run


def recipes(args) -> dict:
    from crdetect.training import TrainConfig

    study = TrainConfig(data=str(args.data), batch_size=args.batch_size, crop=args.crop or None, device=args.device,
                        max_train_patches=args.max_train_patches, max_val_patches=1, amp=args.amp)
    shipped = replace(study, extra_hits=3.0, hit_charge=[0.5, 1000.0], line_prob=0.3,
                      preprocessing={"local_background": 21})
    return {"study": study, "shipped": shipped}


def endless(data, epochs: int = 1000):
    for epoch in range(epochs):
        yield from data.train_batches(epoch)


def reference_batches(config, device: torch.device):
    """The numpy per-sample path (DataLoader in this process), batches moved to the device."""
    sys.path.insert(0, str(REPO / "tests"))
    from numpy_reference import PatchDataset
    from torch.utils.data import DataLoader

    from crdetect.preprocessing import Preprocessing

    dataset = PatchDataset(Path(config.data) / "train.h5", Preprocessing.from_dict(config.preprocessing), augment=True,
                           crop=config.crop, extra_hits=config.extra_hits, hit_charge=tuple(config.hit_charge),
                           line_prob=config.line_prob)
    while True:
        for batch in DataLoader(dataset, batch_size=config.batch_size, shuffle=True):
            yield {"x": batch["image"].to(device), "mask": batch["mask"].to(device),
                   "ignore": batch["ignore"].to(device), "weight": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=None, help="comma-separated (default: the ten of the study)")
    parser.add_argument("--data", default=None, help="benchmark directory (default: the ci preset, made here)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128, help="0: full 256 x 256 patches")
    parser.add_argument("--steps", type=int, default=5, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-train-patches", type=int, default=None)
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="no bfloat16 autocast on CUDA")
    parser.add_argument("--switches", action="store_true", help="also time bf16 / channels-last / compile variants")
    parser.add_argument("--together", action="store_true", help="also time the models trained on shared batches")
    parser.add_argument("--together-patches", type=int, default=None,
                        help="training patches of the --together epoch (default: all)")
    parser.add_argument("--quick", action="store_true", help="3 models, 3 timed batches (a CI-sized check)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models.split(",") if args.models else (["deepcr_unet", "cosmic_conn", "tunet_4"] if args.quick
                                                          else STUDY_MODELS)
    steps = 3 if args.quick else args.steps
    device = torch.device(args.device)
    scratch = Path(tempfile.mkdtemp(prefix="bench_train_"))
    if args.data is None:
        from crdetect.data.simulate import build_benchmark

        args.data = scratch / "data"
        build_benchmark(args.data, "ci", progress=False)
    from crdetect.training.loop import TrainingData, _preprocessing_of

    configs = recipes(args)
    size = args.crop or 256
    lines = [f"bench_train: device {device}"
             + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {torch.get_num_threads()} threads")
             + f", torch {torch.__version__}, batch {args.batch_size} x {size}^2, {steps} timed batches after "
               f"{args.warmup}, bf16 autocast {'on' if args.amp and device.type == 'cuda' else 'off'}, data {args.data}"]
    loaded = {}
    started = time.perf_counter()
    for recipe, config in configs.items():
        loaded[recipe] = TrainingData(config, _preprocessing_of(replace(config)), device)
    lines.append(f"splits loaded in {time.perf_counter() - started:.1f} s "
                 f"({len(loaded['study'].train)} training patches, {loaded['study'].train.nbytes / 1e6:.0f} MB)")
    header = (f"{'model':<12} {'alone p/s':>10} {'study p/s':>10} {'ratio':>6} {'shipped p/s':>12} {'ratio':>6}"
              + (f" {'numpy p/s':>10} {'ours/numpy':>10}" if device.type == "cpu" else "") + f" {'peak MB':>8}")
    lines.append(header)
    print("\n".join(lines), flush=True)
    runs_dir = scratch / "runs"
    runs_dir.mkdir()
    for name in models:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        run = make_run(name, configs["study"], device, runs_dir)
        synthetic = next(loaded["study"].train_batches(0))
        synthetic = {k: (v[:args.batch_size] if v is not None else None) for k, v in synthetic.items()}
        batch_count = args.warmup + steps
        alone = timed(run.step, (synthetic for _ in range(batch_count)), device, args.warmup)
        cells = [f"{name:<12}", f"{args.batch_size / alone:>10.1f}"]
        for recipe in ("study", "shipped"):
            batches = endless(loaded[recipe])
            seconds = timed(run.step, (next(batches) for _ in range(batch_count)), device, args.warmup)
            cells += [f"{args.batch_size / seconds:>{10 if recipe == 'study' else 12}.1f}", f"{alone / seconds:>6.2f}"]
        if device.type == "cpu":
            batches = reference_batches(configs["shipped"], device)
            seconds_numpy = timed(run.step, (next(batches) for _ in range(batch_count)), device, args.warmup)
            cells += [f"{args.batch_size / seconds_numpy:>10.1f}", f"{seconds_numpy / seconds:>10.2f}"]
        cells.append(f"{peak_memory_mb(device):>8.0f}")
        lines.append(" ".join(cells))
        print(lines[-1], flush=True)
        del run
    # the data path alone: how many patches per second it could feed
    for recipe, data in loaded.items():
        batches = endless(data)
        seconds = timed(lambda batch: None, (next(batches) for _ in range(args.warmup + 3 * steps)), device, args.warmup)
        lines.append(f"data path alone ({recipe} recipe): {args.batch_size / seconds:.1f} patches/s")
        print(lines[-1], flush=True)
    if device.type == "cpu":
        batches = reference_batches(configs["shipped"], device)
        seconds = timed(lambda batch: None, (next(batches) for _ in range(args.warmup + 3 * steps)), device, args.warmup)
        lines.append(f"numpy per-sample path alone (shipped recipe, the path replaced): "
                     f"{args.batch_size / seconds:.1f} patches/s")
        print(lines[-1], flush=True)
    if args.switches:
        compiled = "bf16+compile" if device.type == "cuda" else "fp32+compile"
        lines.append("switches (model alone, patches/s): " + ", ".join(["fp32", "bf16", "bf16+channels-last",
                                                                           f"{compiled} (compile s)"]))
        for name in models:
            synthetic = next(loaded["study"].train_batches(0))
            cells = []
            for switches in ({"amp": False, "channels_last": False}, {"amp": True, "channels_last": False},
                             {"amp": True, "channels_last": True}, {"amp": True, "channels_last": False, "compile": True}):
                if switches["amp"] and device.type != "cuda" and not switches.get("compile"):
                    cells.append("n/a (autocast: CUDA only)" if not switches["channels_last"] else
                                 "n/a")
                    continue
                compile_started = time.perf_counter()
                run = make_run(name, configs["study"], device, runs_dir, **switches)
                if switches.get("compile"):
                    run.step(synthetic)  # compiles
                    synchronize(device)
                compile_seconds = time.perf_counter() - compile_started
                seconds = timed(run.step, (synthetic for _ in range(args.warmup + steps)), device, args.warmup)
                compiled = f" ({compile_seconds:.0f} s)" if switches.get("compile") else ""
                cells.append(f"{args.batch_size / seconds:.1f}{compiled}")
                del run
            lines.append(f"{name:<12} " + " | ".join(cells))
            print(lines[-1], flush=True)
    if args.together and len(models) > 1:
        from crdetect.training.loop import train_together

        config = replace(configs["shipped"], epochs=1, max_train_patches=args.together_patches)
        data = TrainingData(config, _preprocessing_of(replace(config)), device)
        results = {}
        for mode in ("one after another", "together"):
            groups = [[name] for name in models] if mode == "one after another" else [models]
            synchronize(device)
            started = time.perf_counter()
            for group in groups:
                train_together([replace(config, model=name) for name in group],
                               [runs_dir / f"{mode[:3]}-{name}" for name in group], progress=False, data=data)
            synchronize(device)
            results[mode] = time.perf_counter() - started
        patches = len(data.train) // args.batch_size * args.batch_size * len(models)
        lines.append(f"{len(models)} models, one epoch each ({patches} patches in all, validation included): one after "
                     f"another {results['one after another']:.1f} s, together {results['together']:.1f} s "
                     f"(ratio {results['together'] / results['one after another']:.2f})")
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
