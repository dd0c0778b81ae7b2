"""The study's subcommands: ``simulate`` (the benchmark), ``train``, ``study``, ``evaluate``, ``label``."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..device import require_torch
from ..errors import CRDetectError
from .arguments import number_type, positive_int


def cmd_simulate(args: argparse.Namespace) -> int:
    require_torch("crdetect simulate", "train")  # detection needs no torch; these do
    from ..data.simulate import build_benchmark, plan
    from ..data.telescopes import CONSECUTIVE_PRESETS

    if args.preset in CONSECUTIVE_PRESETS:
        return _simulate_consecutive(args)
    print(plan(args.preset, args.patch))
    if args.dry_run:
        return 0
    if args.out is None:
        raise CRDetectError("--out DIR is required (unless --dry-run)")
    from dataclasses import replace

    from ..data.simulate import SimulationConfig

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
                             jobs=args.jobs, patch=args.patch)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _simulate_consecutive(args: argparse.Namespace) -> int:
    """``crdetect simulate --preset lco...``: LCO-like sets of consecutive exposures, labelled from the stacks."""
    from ..data.lco import build_consecutive, plan_consecutive

    decam_only = [f"--{name.replace('_', '-')}" for name in ("seeing", "cr_rate_scale", "bright_galaxies", "kinds")
                  if getattr(args, name) is not None]
    if decam_only:
        raise CRDetectError(f"{', '.join(decam_only)} apply to the DECam-like presets (paper, small, ci), not to "
                            f"{args.preset}, whose telescopes fix seeing and rates (crdetect.data.telescopes)")
    print(plan_consecutive(args.preset, args.patch))
    if args.dry_run:
        return 0
    if args.out is None:
        raise CRDetectError("--out DIR is required (unless --dry-run)")
    counts = build_consecutive(args.out, args.preset, seed=args.seed, progress=not args.quiet, jobs=args.jobs,
                               patch=args.patch, stacks=not args.no_stacks)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " patches"
          + ("" if args.no_stacks else "; the labelled exposures in stacks/") + "; label quality in meta.json")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    require_torch("crdetect train", "train")
    from ..preprocessing import Preprocessing
    from ..training import TrainConfig, train

    # the parser's destinations are TrainConfig's field names (tests/test_cli.py checks the augmentation ones)
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if args.model_kwargs_json:
        import json

        overrides["model_kwargs"] = json.loads(args.model_kwargs_json)
    try:
        if args.config:
            config = TrainConfig.from_yaml(args.config, **overrides)
        else:
            config = TrainConfig(**overrides)
        if args.local_background is not None:
            config.preprocessing = {**config.preprocessing, "local_background": args.local_background}
            Preprocessing.from_dict(config.preprocessing)  # validate now, not after loading the data
    except (ValueError, TypeError) as err:
        raise CRDetectError(str(err)) from None
    if not config.data:
        raise CRDetectError("--data DIR (made by `crdetect simulate`) is required")
    from ..models import check_model_name

    check_model_name(config.model)
    row = train(config, args.out, progress=not args.quiet)
    print(f"done: {row}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    require_torch("crdetect study", "train")
    from ..training.study import load_study, run_study, select_rows

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
    if args.no_train and args.no_evaluate:
        raise CRDetectError("--no-train and --no-evaluate leave nothing to do; drop one")
    run_study(study, args.out, models, args.time_budget, args.together, baselines, args.real, args.max_test_patches,
              progress=not args.quiet, train=not args.no_train, score=not args.no_evaluate)
    if args.no_evaluate:
        print(f"trained into {args.out}/runs/ (not scored: crdetect study --no-train scores them)")
        return 0
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {args.out}/results.csv, results.md, runs/, evaluation/report.html")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    require_torch("crdetect evaluate")
    from ..evaluation.evaluate import evaluate

    if args.inpainting:
        from ..evaluation.inpainting import evaluate_inpainting

        evaluate_inpainting(args.real, args.out, args.inpainting_frames, args.device, progress=not args.quiet)
        print((Path(args.out) / "results.md").read_text())
        print(f"wrote {args.out}/results.csv, results.md, inpainting_stamps.png")
        return 0
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
    require_torch("crdetect label", "train")
    import numpy as np
    from astropy.io import fits

    from ..data.consecutive import label_stack
    from ..frame import GAIN_KEYWORDS, READ_NOISE_KEYWORDS, required_header_number
    from ..io.reading import read_science_hdus
    from ..io.writing import atomic_write, output_path_for

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
        from ..data.consecutive import write_training_set

        counts = write_training_set([s.data for s in sciences], labels, gain, read_noise, args.training_set,
                                    patch=args.patch)
        print(f"wrote {args.training_set}: train {counts['train']}, val {counts['val']} patches with weight maps "
              f"(crdetect train --data {args.training_set} [--loss median_weighted])")
    return 0


def add_parsers(subcommand) -> None:
    """The ``simulate``, ``train``, ``study``, ``label`` and ``evaluate`` subcommands."""
    simulate = subcommand("simulate", help="build the DECam-like CR benchmark or LCO-like consecutive exposures "
                                           "(HDF5 patches)")
    simulate.add_argument("--preset", default="small", choices=["paper", "small", "ci", "lco", "lco-small", "lco-ci"],
                          help="paper/small/ci: the DECam-like benchmark; lco/lco-small/lco-ci: LCO-like sets of "
                               "three consecutive exposures (0.4, 1, 2 m) labelled from the stacks, with Gemini "
                               "GMOS-like 1x1 and 2x2 test sets (Cosmic-CoNN's data)")
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
    simulate.add_argument("--jobs", type=positive_int, default=1,
                          help="frames made in this many processes (the files are the same for any number)")
    simulate.add_argument("--patch", type=positive_int, default=None, metavar="PX",
                          help="cut the frames into PX x PX patches (a multiple of 16 up to 1024; default the "
                               "study's 256; the lco presets' 1024) to train on larger crops, as Cosmic-CoNN "
                               "trains on 1024 x 1024")
    simulate.add_argument("--no-stacks", action="store_true",
                          help="lco presets: do not keep the labelled exposures as FITS files (stacks/), patches only")
    simulate.add_argument("--dry-run", action="store_true", help="print the plan and the patch counts only")
    simulate.set_defaults(func=cmd_simulate)

    train = subcommand("train", help="train a registered model on a benchmark directory")
    train.add_argument("--model", default=None, help="registry name (default deepcr_unet)")
    train.add_argument("--model-kwargs", dest="model_kwargs_json", default=None,
                       help='JSON constructor overrides, e.g. \'{"base_channels": 16}\'')
    train.add_argument("--data", default=None, help="directory with train.h5 and val.h5")
    train.add_argument("--loss", default=None, choices=["bce", "dice", "bce_dice", "median_weighted"],
                       help="default bce_dice, the study's (1 - Dice + BCE) / 2; median_weighted: Cosmic-CoNN's "
                            "median-weighted BCE (needs the weight maps `crdetect simulate` or `crdetect label "
                            "--training-set` store)")
    train.add_argument("--alpha-ramp-epochs", type=int, default=None,
                       help="median_weighted: epochs over which its alpha rises from 0 to 1 (default: all)")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--epoch-patches", type=positive_int, default=None, metavar="N",
                       help="patches per epoch, validated after each (default: one pass over the training set); "
                            "validation every N crops on large training sets")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--optimizer", default=None, choices=["adam", "sgd"])
    train.add_argument("--crop", type=int, default=None, help="random crop size (faster on CPU)")
    train.add_argument("--max-train-patches", type=int, default=None)
    train.add_argument("--max-val-patches", type=int, default=None)
    train.add_argument("--device", default=None)
    train.add_argument("--channels-last", default=None, action=argparse.BooleanOptionalAction,
                       help="channels-last memory format (default: on CUDA for models without GroupNorm)")
    train.add_argument("--compile", action="store_true", default=None,
                       help="torch.compile the model (compile time counts)")
    train.add_argument("--time-budget", dest="time_budget_min", type=float, default=None, metavar="MIN",
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
    train.add_argument("--keep-epochs", action="store_true", default=None,
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
    study.add_argument("--epochs", type=positive_int, default=None, help="override every row's epochs")
    study.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                       help="training minutes for all rows together, shared equally")
    study.add_argument("--no-train", action="store_true",
                       help="only score the runs already in OUT/runs (e.g. trained on a GPU machine, scored here)")
    study.add_argument("--no-evaluate", action="store_true",
                       help="only train (a GPU window of a campaign: the validation Dice of every epoch is in each "
                            "run's metrics.csv; score later with --no-train)")
    study.add_argument("--together", action="store_true",
                       help="train rows on the same batches at once (each batch is made once)")
    study.add_argument("--device", default=None)
    study.add_argument("--crop", type=int, default=None, help="random crop size of training patches")
    study.add_argument("--batch-size", type=positive_int, default=None)
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
                       help="also cut the labelled exposures into training patches (train.h5, val.h5 with the "
                            "median weight map) for `crdetect train --data DIR`")
    label.add_argument("--patch", type=positive_int, default=256, metavar="PX",
                       help="side of the --training-set patches (a multiple of 16 up to 1024; default 256)")
    label.set_defaults(func=cmd_label)

    evaluate = subcommand("evaluate", help="score runs and baselines on the same test set and real frames")
    evaluate.add_argument("--runs", nargs="*", default=[], help="run directories or checkpoints")
    evaluate.add_argument("--inpainting", action="store_true",
                          help="the inpainting benchmark instead: every cleaning method (crdetect's, maskfill, "
                               "scikit-image's biharmonic) on M51 and the injected real frames (--real DIR) and on "
                               "simulated frames, on the true hits and end to end on default's and LA-Cosmic's masks")
    evaluate.add_argument("--inpainting-frames", type=number_type(int, 0, what="a number of frames >= 0"), default=2,
                          metavar="N", help="simulated frames of the inpainting benchmark (default 2)")
    evaluate.add_argument("--baselines", default="lacosmic", help="comma-separated: lacosmic,deepcr,cosmic_conn")
    evaluate.add_argument("--data", default=None, help="benchmark directory (val.h5, test.h5)")
    evaluate.add_argument("--real", default=None, help="directory of labelled real frames (shared/data/real)")
    evaluate.add_argument("--sources", type=number_type(int, 0, what="a number of frames >= 0"), default=0,
                          metavar="N", help="also score false detections on trailed, elongated, moving, "
                                            "undersampled and donut sources: N simulated frames per kind")
    evaluate.add_argument("--sources-seed", type=number_type(int, 0, what="a seed >= 0"), default=0,
                          help="seed of the --sources frames (default 0; another seed is a fresh set of the same kinds)")
    evaluate.add_argument("--source-veto", choices=["on", "off", "both"], default="on",
                          help="score the networks with the source veto (crdetect.veto; on, as crdetect detect runs "
                               "them), without it, or both ways (rows NAME and NAME-noveto)")
    evaluate.add_argument("--max-val-patches", type=int, default=None)
    evaluate.add_argument("--max-test-patches", type=int, default=None)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--out", required=True, help="output directory")
    evaluate.set_defaults(func=cmd_evaluate)

