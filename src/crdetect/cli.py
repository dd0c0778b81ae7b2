"""Command-line interface: ``crdetect detect``, ``crdetect models`` and the study's other commands."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from . import __version__
from .errors import CRDetectError

logger = logging.getLogger(__name__)

SAMPLE_FILE = Path(__file__).parent / "samples" / "saao_a8280271.fits.fz"


def _number_type(convert, low: float | None = None, high: float | None = None, low_open: bool = False,
                 what: str = "a finite number"):
    """An argparse type: ``convert`` (int or float) of the text, finite and within [low, high] (``low_open``:
    above ``low``), so bad numbers are usage errors before any file is read, not failures file by file."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        below = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number_type(int, 1, what="a whole number >= 1")
_non_negative_int = _number_type(int, 0, what="a whole number >= 0")
_finite_float = _number_type(float)
_positive_float = _number_type(float, 0, low_open=True, what="a finite number > 0")
_non_negative_float = _number_type(float, 0, what="a finite number >= 0")
_probability = _number_type(float, 0, 1, what="a probability between 0 and 1")
_tile_size = _number_type(int, 0, what="0 (whole frames) or a tile size in pixels")


def _expand_inputs(items: list[str]) -> list[Path]:
    """Files, directories (their FITS files) and glob patterns, in order, without duplicates."""
    from .io.reading import FITS_SUFFIXES

    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.name.lower().endswith(FITS_SUFFIXES) and p.is_file())
        elif any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(Path().glob(item)) if not path.is_absolute() else sorted(
                Path(path.anchor).glob(str(path.relative_to(path.anchor))))
            if not matches:
                raise CRDetectError(f"no file matches {item!r}")
            paths += matches
        else:
            paths.append(path)
    seen, unique = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's time limit, ``kill``), handled like Ctrl-C: workers stopped, temporary
    files removed, the summary written, exit status 143."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _check_detector_options(args: argparse.Namespace, detector) -> None:
    """Usage errors that need the model (decided before any file is read)."""
    from .inference import is_untrained_name, shipped_model_names

    if is_untrained_name(args.model) and not args.allow_untrained:
        raise CRDetectError(f"{args.model!r} is a registry network without trained weights: its masks are "
                            f"meaningless. Use a shipped model ({', '.join(shipped_model_names())}) or a checkpoint "
                            "(.pt), or pass --allow-untrained for experiments")
    if args.tile:
        margin = detector._margin(None)
        if args.tile <= 2 * margin:
            raise CRDetectError(f"--tile {args.tile} is too small for model {detector.name!r}: tiles must be larger "
                                f"than twice its context margin ({margin} px), i.e. at least {2 * margin + 1}; "
                                "or --tile 0 for whole frames")


def cmd_detect(args: argparse.Namespace) -> int:
    import signal

    from .pipeline import DetectOptions, detector_for, run_batch

    inputs = _expand_inputs(args.files) + ([SAMPLE_FILE] if args.sample else [])
    if not inputs:
        raise CRDetectError("no input files; pass FITS files, directories or globs (or --sample)")
    if args.hdu is not None and args.hdu.strip().startswith("-"):
        raise CRDetectError(f"--hdu {args.hdu}: HDU numbers count from 0 (the primary HDU); name the HDU by its "
                            "number or EXTNAME (`crdetect detect FILE` searches every science image)")
    if not any(path.exists() for path in inputs):  # a mistyped path: nothing (out-dir, summary) is created
        raise CRDetectError(f"no such file: {', '.join(repr(str(p)) for p in inputs[:5])}"
                            f"{f' and {len(inputs) - 5} more' if len(inputs) > 5 else ''}; check the path")
    options = DetectOptions(model=args.model, out_dir=args.out_dir, hdu=args.hdu, threshold=args.threshold,
                            device=args.device, tile=args.tile or None, overwrite=args.overwrite,
                            skip_existing=args.skip_existing, inpaint=args.inpaint, saturation=args.saturation,
                            full_frame=args.full_frame,
                            gain=args.gain, read_noise=args.read_noise, sky=args.sky,
                            noise_from_header=args.noise_from_header, compile=args.compile,
                            precision=args.precision, threads=args.threads, mask_only=args.mask_only,
                            file_masks=not args.no_file_mask, grow=args.grow, bad_pixel_mask=args.bad_pixel_mask,
                            encoders=args.encoders, source_veto=not args.no_source_veto)
    if args.bad_pixel_mask:  # a missing or unreadable mask file fails once, before any work
        from .io.reading import open_fits

        open_fits(args.bad_pixel_mask).close()
    # a bad model name, checkpoint or tile fails once, up front; the serial path reuses this detector
    _check_detector_options(args, detector_for(options))
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        rows, summary = run_batch(inputs, options, jobs=args.jobs, scheduler=args.scheduler, progress=not args.quiet)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _report_batch(rows, summary, len(inputs), args.quiet)


def _report_batch(rows: list[dict], summary: Path, files: int, quiet: bool) -> int:
    """Print what became of every file (errors and files not written on stderr, always) and return the exit
    status: 0 when this run wrote (or, with --skip-existing, kept) every output it was asked for, else 1."""
    from .pipeline import wrote_everything
    from .pipeline.stages import KEPT, OK

    if not quiet:
        for row in rows:
            if row["status"] == OK:
                print(f"{Path(row['file']).name}[{row['hdu']}]: {row['cr_pixels']} CR pixels "
                      f"({100 * row['cr_fraction']:.3f} %) -> {row['output']}")
            elif row["status"] == KEPT:
                print(f"{Path(row['file']).name}: {row['status']} ({row['output']})")
        print(f"summary: {summary}")
    missing = [row for row in rows if row["status"] not in (OK, KEPT)]
    for row in missing:
        print(f"{'error: ' if row['status'].startswith('error: ') else ''}{row['file']}: "
              f"{row['status'].removeprefix('error: ')}", file=sys.stderr)
    if wrote_everything(rows):
        return 0
    print(f"{len({row['file'] for row in missing})} of {files} files were not written by this run (see {summary})",
          file=sys.stderr)
    return 1


def cmd_models(args: argparse.Namespace) -> int:
    from .inference import shipped_weights
    from .models import count_parameters, create_model, list_models, model_description

    names = list_models(args.pattern)
    if not names:
        raise CRDetectError(f"no model matches {args.pattern!r}")
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  {'params':>9}  {'weights':<8}  description")
    for name in names:
        weights = "shipped" if shipped_weights(name) else "-"
        print(f"{name:<{width}}  {count_parameters(create_model(name)):>9,}  {weights:<8}  {model_description(name)}")
    from .checkpoint import load_checkpoint
    from .pretrained import WEIGHTS_DIR

    # default and fast first: they are the ones trained for real frames
    shipped = sorted(WEIGHTS_DIR.glob("*.pt"), key=lambda p: (p.stem not in ("default", "fast"), p.stem))
    if shipped:
        print("\nshipped trained models (use with --model NAME; 'default' is used when --model is not given):")
        for path in shipped:
            model, info = load_checkpoint(path)
            # the data's description; a bare path of the machine that trained it means nothing here
            trained_on = info.extra.get("trained_on") or "see the model card"
            test = info.extra.get("test") or {}
            scores = "; test " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()) if test else ""
            print(f"  {path.stem:<12} {info.model_name} {info.model_kwargs}  {count_parameters(model):,} params, "
                  f"threshold {info.threshold:.3f}; trained on {trained_on}{scores}; model card: "
                  f"{path.with_suffix('.md')}")
    else:
        print("\nNo trained model is shipped: `crdetect detect` needs --model CHECKPOINT.pt.")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .data.simulate import build_benchmark, plan

    print(plan(args.preset))
    if args.dry_run:
        return 0
    if args.out is None:
        raise CRDetectError("--out DIR is required (unless --dry-run)")
    from dataclasses import replace

    from .data.simulate import SimulationConfig

    config = SimulationConfig()
    if args.seeing:
        config = replace(config, seeing_arcsec=tuple(args.seeing))
    if args.cr_rate_scale is not None:
        config = replace(config, cr_rate_scale=args.cr_rate_scale[0],
                         cr_rate_scale_max=args.cr_rate_scale[1] if len(args.cr_rate_scale) > 1 else None)
    if args.bright_galaxies:
        config = replace(config, bright_galaxies=tuple(args.bright_galaxies))
    if args.kinds:
        try:
            pairs = [item.split("=") for item in args.kinds.split(",") if item]
            config = replace(config, kind_fractions=tuple((name.strip(), float(value)) for name, value in pairs))
        except ValueError as err:
            raise CRDetectError(f"--kinds: {err}; write e.g. --kinds elongated=0.15,trailed_sharp=0.15") from None
    counts = build_benchmark(args.out, args.preset, seed=args.seed, config=config, progress=not args.quiet,
                             jobs=args.jobs)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .preprocessing import Preprocessing
    from .training import TrainConfig, train

    overrides = {"model": args.model, "data": args.data, "loss": args.loss, "epochs": args.epochs,
                 "batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer, "crop": args.crop,
                 "device": args.device, "seed": args.seed, "max_train_patches": args.max_train_patches,
                 "max_val_patches": args.max_val_patches, "init_from": args.init_from,
                 "alpha_ramp_epochs": args.alpha_ramp_epochs, "channels_last": args.channels_last,
                 "compile": args.compile or None, "time_budget_min": args.time_budget,
                 "pedestal_prob": args.pedestal_prob, "extra_hits": args.extra_hits, "hit_zoom": args.hit_zoom,
                 "hit_charge": args.hit_charge, "line_prob": args.line_prob,
                 "keep_epochs": args.keep_epochs or None}
    if args.model_kwargs:
        import json

        overrides["model_kwargs"] = json.loads(args.model_kwargs)
    try:
        if args.config:
            config = TrainConfig.from_yaml(args.config, **overrides)
        else:
            config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
        if args.local_background is not None:
            config.preprocessing = {**config.preprocessing, "local_background": args.local_background}
            Preprocessing.from_dict(config.preprocessing)  # validate now, not after loading the data
    except (ValueError, TypeError) as err:
        raise CRDetectError(str(err)) from None
    if not config.data:
        raise CRDetectError("--data DIR (made by `crdetect simulate`) is required")
    from .models import check_model_name

    check_model_name(config.model)
    row = train(config, args.out, progress=not args.quiet)
    print(f"done: {row}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from .training.study import load_study, run_study, select_rows

    overrides = {"epochs": args.epochs, "device": args.device, "crop": args.crop, "batch_size": args.batch_size,
                 "max_train_patches": args.max_train_patches, "max_val_patches": args.max_val_patches,
                 "seed": args.seed, "compile": args.compile or None, "channels_last": args.channels_last}
    try:
        study = load_study(args.config, args.data, **overrides)
        models = [m for m in args.models.split(",") if m] if args.models else None
        baselines = [b for b in args.baselines.split(",") if b] if args.baselines is not None else None
        select_rows(study, models)  # unknown row names fail now, not after the data is loaded
    except (ValueError, TypeError) as err:
        raise CRDetectError(str(err)) from None
    for name in ("train.h5", "val.h5", "test.h5"):
        if not (Path(args.data) / name).is_file():
            raise CRDetectError(f"{Path(args.data) / name} is missing; build the data with "
                                f"`crdetect simulate --preset paper --out {args.data}`")
    run_study(study, args.out, models, args.time_budget, args.together, baselines, args.real, args.max_test_patches,
              progress=not args.quiet, train=not args.no_train)
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {args.out}/results.csv, results.md, runs/, evaluation/report.html")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import evaluate

    if not args.data and not args.real and not args.sources:
        raise CRDetectError("pass --data DIR (a benchmark), --real DIR (labelled real frames) and/or --sources N "
                            "(simulated trailed and elongated sources)")
    baselines = [b for b in args.baselines.split(",") if b] if args.baselines else []
    rows = evaluate(args.runs, args.data, args.out, baselines, args.real, args.max_val_patches,
                    args.max_test_patches, args.device, progress=not args.quiet, source_frames_per_kind=args.sources,
                    source_veto=args.source_veto, sources_seed=args.sources_seed)
    for table in ("results.md", "sources.md"):
        if (Path(args.out) / table).exists():
            print((Path(args.out) / table).read_text())
    written = "results.csv, results.md, curves.json, figures, " if rows else ""
    written += "sources.csv, sources.md, " if args.sources else ""
    print(f"wrote {args.out}/{written}report.html")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    import numpy as np
    from astropy.io import fits

    from .data.consecutive import label_stack
    from .io.reading import GAIN_KEYWORDS, READ_NOISE_KEYWORDS, read_science_hdus, required_header_number
    from .io.writing import atomic_write, output_path_for

    sciences = [read_science_hdus(path, args.hdu)[0] for path in args.files]
    header = sciences[0].keywords  # gain and read noise may come from the primary header (INHERIT)

    gain = required_header_number(args.gain, header, GAIN_KEYWORDS, "gain", args.files[0])
    read_noise = required_header_number(args.read_noise, header, READ_NOISE_KEYWORDS, "read noise", args.files[0])
    shapes = {s.data.shape for s in sciences}
    if len(shapes) != 1:
        raise CRDetectError(f"the exposures differ in shape ({sorted(shapes)}); align and trim them first")
    labels = label_stack([s.data for s in sciences], gain, read_noise)
    out = Path(args.out)
    for path, science, frame in zip(args.files, sciences, labels.frames):
        hdus = fits.HDUList([fits.PrimaryHDU(header=science.header), fits.ImageHDU(science.data, name="SCI"),
                             fits.ImageHDU(frame.cr_mask.astype(np.uint8), name="CRMASK"),
                             fits.ImageHDU(frame.ignore.astype(np.uint8), name="IGNORE")])
        hdus[0].header["CRREJECT"] = (frame.rejected, "frame rejected (outlying CR fraction)")
        hdus[0].header["CRFRAC"] = (frame.cr_fraction, "fraction of pixels labelled CR")
        atomic_write(hdus, output_path_for(path, out, "_crlabel"), args.overwrite)
        state = "REJECTED" if frame.rejected else "ok"
        print(f"{path}: {int(frame.cr_mask.sum())} CR pixels ({100 * frame.cr_fraction:.3f} %), {state}")
    atomic_write(fits.HDUList([fits.PrimaryHDU(labels.median.astype(np.float32)),
                               fits.ImageHDU(labels.weight.astype(np.float32), name="WEIGHT")]),
                 out / "median_stack.fits", args.overwrite)
    print(f"wrote labels to {out} (and median_stack.fits with the median-weighted loss map)")
    if args.training_set:
        from .data.consecutive import write_training_set

        counts = write_training_set([s.data for s in sciences], labels, gain, read_noise, args.training_set)
        print(f"wrote {args.training_set}: train {counts['train']}, val {counts['val']} patches with weight maps "
              f"(crdetect train --data {args.training_set} [--loss median_weighted])")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from .viewer import write_viewer

    page = write_viewer(args.output, args.out, args.extver, args.image, overwrite=args.overwrite)
    print(f"wrote {page}: open it in a browser (self-contained, no server needed)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # -v, -q and --debug are taken before and after the subcommand (`crdetect -q detect ...`, `... detect -v`):
    # SUPPRESS leaves an option given on one side alone when the other side parses
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more log output (-vv for debug)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print errors only")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks of errors")
    parser = argparse.ArgumentParser(prog="crdetect", description="Deep-learning cosmic-ray detection for CCD images.",
                                     parents=[common])
    parser.add_argument("--version", action="version", version=f"crdetect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def subcommand(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    detect = subcommand("detect", help="detect cosmic rays in FITS files")
    detect.add_argument("files", nargs="*", help="FITS files, directories or glob patterns")
    detect.add_argument("--sample", action="store_true", help="also process the sample frame shipped with crdetect")
    detect.add_argument("--model", default="default",
                        help="shipped model name (default, fast for real frames; the study's ten, e.g. tunet_3, "
                             "trained on its benchmark: `crdetect models`) or checkpoint path (.pt); a registry name "
                             "without shipped weights is an untrained network and needs --allow-untrained")
    detect.add_argument("--allow-untrained", action="store_true",
                        help="accept a registry network without trained weights (experiments only)")
    detect.add_argument("--out-dir", default="crdetect_out", help="output directory (default: %(default)s)")
    detect.add_argument("--hdu", default=None,
                        help="HDU index or EXTNAME to search (output named <stem>_hdu<HDU>_crmask.fits); default "
                             "(or 'all'): every science image (each amplifier or CCD); mask, error, variance and "
                             "weight planes and empty HDUs are never searched")
    detect.add_argument("--bad-pixel-mask", default=None, metavar="MASK.fits",
                        help="the detector's bad-pixel mask (non-zero = bad: hot pixels, bad columns), applied to "
                             "every input: the plane with the science HDU's EXTNAME/EXTVER, else its index, else the "
                             "file's only image; those pixels are never flagged (a single frame cannot tell a hot "
                             "pixel from a one-pixel hit)")
    detect.add_argument("--no-file-mask", action="store_true",
                        help="ignore the file's own bad-pixel/DQ plane (by default its non-zero pixels are never "
                             "flagged and are kept out of the background and noise estimates)")
    detect.add_argument("--threshold", type=_probability, default=None,
                        help="probability threshold, 0 to 1 (default: the model's)")
    detect.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    detect.add_argument("--grow", type=_number_type(int, 0, what="a whole number of pixels >= 0"), default=0,
                        metavar="PX", help="grow the CR mask by PX pixels (8-connected; default 0)")
    detect.add_argument("--tile", type=_tile_size, default=1024, help="tile size in pixels; 0 for whole frames")
    detect.add_argument("--overwrite", action="store_true", help="replace existing output files")
    detect.add_argument("--skip-existing", action="store_true", help="skip files whose output exists (restarts)")
    detect.add_argument("--full-frame", action="store_true",
                        help="run on every pixel; by default only the header's DATASEC (else TRIMSEC) of raw frames, "
                             "so overscan is never flagged")
    detect.add_argument("--saturation", type=_positive_float, default=None,
                        help="saturation level (image units); default: header SATURATE/SATLEVEL, else flat "
                             "plateaus at the top of the frame's range. Saturated stars and bleed trails are "
                             "never flagged")
    detect.add_argument("--mask-only", action="store_true",
                        help="write only the CRMASK/CRPROB (and CLEANED) extensions, not a copy of the input's "
                             "HDUs (a quarter of the size for float32 CCDs)")
    detect.add_argument("--inpaint", action="store_true",
                        help="also write a CLEANED extension (flagged pixels: median of unflagged 5x5 neighbours)")
    detect.add_argument("--gain", type=_positive_float, default=None,
                        help="e-/ADU; with --read-noise, scale by the detector's noise instead of the pixels' "
                             "(bias-subtracted frames)")
    detect.add_argument("--read-noise", type=_non_negative_float, default=None, help="e- (with --gain)")
    detect.add_argument("--noise-from-header", action="store_true",
                        help="take gain and read noise from each HDU's header (GAIN, RDNOISE, ...)")
    detect.add_argument("--sky", type=_finite_float, default=None, help="sky level in ADU (default: robust estimate)")
    detect.add_argument("--compile", action="store_true",
                        help="torch.compile the network (10-30 s per process; on 2 CPU cores no faster than the "
                             "eager network since BatchNorms are folded: measure with benchmarks/bench_detect.py)")
    detect.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="network arithmetic: auto (default: float16 on CUDA GPUs, measured TPR within 0.0002; "
                             "bfloat16 on CPUs with native bfloat16, AVX512-BF16 or AMX, measured ~2x faster with "
                             "TPR within 0.002; float32 elsewhere), "
                             "float32, bfloat16, float16 (CUDA GPUs); the output header records it (CRPRECIS)")
    detect.add_argument("--no-source-veto", action="store_true",
                        help="keep every region the network flags; by default regions that look like stars (smooth, "
                             "with a PSF's wings: trailed, elongated or undersampled stars) are taken out "
                             "(crdetect.veto; the header counts them in CRNVETO)")
    detect.add_argument("--jobs", type=_positive_int, default=1, help="worker processes on this machine (default 1)")
    detect.add_argument("--threads", type=_positive_int, default=None,
                        help="torch threads per process (default: every core, or 1 per worker with --jobs or "
                             "--scheduler); set it to the cores a batch job was given")
    detect.add_argument("--encoders", type=_non_negative_int, default=None,
                        help="threads that compress the outputs while the next file is searched (default: none "
                             "on a CPU, where the network uses every core; up to 8 beside a GPU); 0: the writer "
                             "thread compresses")
    detect.add_argument("--scheduler", default=None,
                        help="Dask scheduler address, or 'local' for a local Dask cluster (needs crdetect[survey])")
    detect.set_defaults(func=cmd_detect)

    view = subcommand("view", help="an HTML page to inspect a detection (threshold slider, zoom, hits, "
                                       "mask download)")
    view.add_argument("output", help="a file written by crdetect detect")
    view.add_argument("--out", default=None, help="the page (default: OUTPUT with .html)")
    view.add_argument("--extver", type=int, default=None, help="which science image (EXTVER of its CRMASK)")
    view.add_argument("--image", default=None, help="the input file, for outputs written with --mask-only")
    view.add_argument("--overwrite", action="store_true", help="replace an existing page")
    view.set_defaults(func=cmd_view)

    simulate = subcommand("simulate", help="build the DECam-like CR benchmark (HDF5 patches)")
    simulate.add_argument("--preset", default="small", choices=["paper", "small", "ci"])
    simulate.add_argument("--out", help="output directory")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--seeing", type=float, nargs=2, metavar=("MIN", "MAX"),
                          help="seeing FWHM range in arcsec (default 0.8 1.6, DECam)")
    simulate.add_argument("--cr-rate-scale", type=float, nargs="+", default=None, metavar="SCALE",
                          help="multiplier on the natural CR rate (default 6); two values: per-frame "
                               "log-uniform range")
    simulate.add_argument("--bright-galaxies", type=int, nargs=2, metavar=("MIN", "MAX"),
                          help="large bright galaxies per frame (default none)")
    simulate.add_argument("--kinds", default=None, metavar="KIND=FRACTION,...",
                          help="fractions of frames with non-round sources (trailed, trailed_sharp, elongated, "
                               "moving, undersampled, donut); the rest sidereal. Default: none (the benchmark)")
    simulate.add_argument("--jobs", type=_positive_int, default=1,
                          help="frames made in this many processes (the files are the same for any number)")
    simulate.add_argument("--dry-run", action="store_true", help="print the plan and the patch counts only")
    simulate.set_defaults(func=cmd_simulate)

    train = subcommand("train", help="train a registered model on a benchmark directory")
    train.add_argument("--model", default=None, help="registry name (default deepcr_unet)")
    train.add_argument("--model-kwargs", default=None, help='JSON constructor overrides, e.g. \'{"base_channels": 16}\'')
    train.add_argument("--data", default=None, help="directory with train.h5 and val.h5")
    train.add_argument("--loss", default=None, choices=["bce", "dice", "bce_dice", "median_weighted"],
                       help="default bce_dice, the study's (1 - Dice + BCE) / 2; median_weighted: Cosmic-CoNN's "
                            "median-weighted BCE (needs the weight maps `crdetect simulate` or `crdetect label "
                            "--training-set` store)")
    train.add_argument("--alpha-ramp-epochs", type=int, default=None,
                       help="median_weighted: epochs over which its alpha rises from 0 to 1 (default: all)")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--optimizer", default=None, choices=["adam", "sgd"])
    train.add_argument("--crop", type=int, default=None, help="random crop size (faster on CPU)")
    train.add_argument("--max-train-patches", type=int, default=None)
    train.add_argument("--max-val-patches", type=int, default=None)
    train.add_argument("--device", default=None)
    train.add_argument("--channels-last", default=None, action=argparse.BooleanOptionalAction,
                       help="channels-last memory format (default: on CUDA for models without GroupNorm)")
    train.add_argument("--compile", action="store_true", help="torch.compile the model (compile time counts)")
    train.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                       help="stop after the epoch that exceeds MIN minutes of training")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--init-from", default=None, help="checkpoint whose weights start the run")
    train.add_argument("--pedestal-prob", type=float, default=None,
                       help="probability of a bright smooth blob under a training patch (hits on galaxy cores)")
    train.add_argument("--extra-hits", type=float, default=None,
                       help="mean number of library hits added to each training patch on the fly")
    train.add_argument("--hit-zoom", type=float, default=None,
                       help="magnify those hits by up to this factor (wider, longer footprints)")
    train.add_argument("--hit-charge", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                       help="range of the factor on the extra hits' charge (default 0.5 50)")
    train.add_argument("--line-prob", type=float, default=None,
                       help="probability of an unlabelled straight line across a training patch (sky lines, "
                            "bad columns, satellite trails)")
    train.add_argument("--local-background", type=int, default=None, metavar="PX",
                       help="subtract a local background (sliding median over PX px) instead of the global sky "
                            "from the network's input; stored in the checkpoint")
    train.add_argument("--keep-epochs", action="store_true",
                       help="also write epochs/eN.pt after every epoch (for scripts/average_epochs.py)")
    train.add_argument("--config", default=None, help="YAML config; command-line options override it")
    train.add_argument("--out", required=True, help="run directory (resumed if it holds last.pt)")
    train.set_defaults(func=cmd_train)

    study = subcommand("study", help="train every model of the study, score them with the baselines, write "
                                         "the study's table beside its published numbers")
    study.add_argument("--data", required=True, help="benchmark directory (train.h5, val.h5, test.h5)")
    study.add_argument("--out", required=True, help="output directory (resumed: finished rows are skipped)")
    study.add_argument("--config", default=None, help="study YAML (default: the shipped configs/study.yaml)")
    study.add_argument("--models", default=None, metavar="NAME,...", help="rows to run (default: the ten of the study)")
    study.add_argument("--epochs", type=_positive_int, default=None, help="override every row's epochs")
    study.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                       help="training minutes for all rows together, shared equally")
    study.add_argument("--no-train", action="store_true",
                       help="only score the runs already in OUT/runs (e.g. trained on a GPU machine, scored here)")
    study.add_argument("--together", action="store_true",
                       help="train rows on the same batches at once (each batch is made once)")
    study.add_argument("--device", default=None)
    study.add_argument("--crop", type=int, default=None, help="random crop size of training patches")
    study.add_argument("--batch-size", type=_positive_int, default=None)
    study.add_argument("--max-train-patches", type=int, default=None)
    study.add_argument("--max-val-patches", type=int, default=None)
    study.add_argument("--max-test-patches", type=int, default=None)
    study.add_argument("--seed", type=int, default=None)
    study.add_argument("--compile", action="store_true", help="torch.compile every model")
    study.add_argument("--channels-last", default=None, action=argparse.BooleanOptionalAction)
    study.add_argument("--baselines", default=None, help="comma-separated (default: the config's)")
    study.add_argument("--real", default=None, help="also score on labelled real frames (shared/data/real)")
    study.set_defaults(func=cmd_study)

    label = subcommand("label", help="CR labels from >= 3 aligned consecutive exposures (Cosmic-CoNN recipe)")
    label.add_argument("files", nargs="+", help="aligned exposures of one field (FITS)")
    label.add_argument("--out", required=True, help="output directory")
    label.add_argument("--hdu", default=None, help="HDU index or EXTNAME of the science image")
    label.add_argument("--gain", type=float, default=None, help="e-/ADU (default: header GAIN)")
    label.add_argument("--read-noise", type=float, default=None, help="e- (default: header RDNOISE)")
    label.add_argument("--overwrite", action="store_true")
    label.add_argument("--training-set", default=None, metavar="DIR",
                       help="also cut the labelled exposures into 256 x 256 training patches (train.h5, val.h5 "
                            "with the median weight map) for `crdetect train --data DIR`")
    label.set_defaults(func=cmd_label)

    evaluate = subcommand("evaluate", help="score runs and baselines on the same test set and real frames")
    evaluate.add_argument("--runs", nargs="*", default=[], help="run directories or checkpoints")
    evaluate.add_argument("--baselines", default="lacosmic", help="comma-separated: lacosmic,deepcr,cosmic_conn")
    evaluate.add_argument("--data", default=None, help="benchmark directory (val.h5, test.h5)")
    evaluate.add_argument("--real", default=None, help="directory of labelled real frames (shared/data/real)")
    evaluate.add_argument("--sources", type=_number_type(int, 0, what="a number of frames >= 0"), default=0,
                          metavar="N", help="also score false detections on trailed, elongated, moving, "
                                            "undersampled and donut sources: N simulated frames per kind")
    evaluate.add_argument("--sources-seed", type=_number_type(int, 0, what="a seed >= 0"), default=0,
                          help="seed of the --sources frames (default 0; another seed is a fresh set of the same kinds)")
    evaluate.add_argument("--source-veto", choices=["on", "off", "both"], default="on",
                          help="score the networks with the source veto (crdetect.veto; on, as crdetect detect runs "
                               "them), without it, or both ways (rows NAME and NAME-noveto)")
    evaluate.add_argument("--max-val-patches", type=int, default=None)
    evaluate.add_argument("--max-test-patches", type=int, default=None)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--out", required=True, help="output directory")
    evaluate.set_defaults(func=cmd_evaluate)

    models = subcommand("models", help="list the registered models with their parameter counts")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'tunet_*'")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("verbose", 0), ("quiet", False), ("debug", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    level = logging.ERROR if args.quiet else logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CRDetectError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as err:  # anything unforeseen: one line, the traceback on request
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
