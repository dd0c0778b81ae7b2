"""``crdetect detect`` (and ``view``, ``models``): detection on FITS files, the page to inspect it, the models."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from ..cleaning import DEFAULT_METHOD, METHODS
from ..errors import CRDetectError
from .arguments import (
    expand_inputs,
    finite_float,
    non_negative_float,
    non_negative_int,
    number_type,
    positive_float,
    positive_int,
    probability,
    raise_terminated,
    tile_size,
)

SAMPLE_FILE = Path(__file__).resolve().parents[1] / "samples" / "saao_a8280271.fits.fz"


def check_detector_options(args: argparse.Namespace, detector) -> None:
    """Usage errors that need the model (decided before any file is read)."""
    from ..inference import is_untrained_name, shipped_model_names

    if is_untrained_name(args.model) and not args.allow_untrained:
        raise CRDetectError(f"{args.model!r} is a registry network without trained weights: its masks are "
                            f"meaningless. Use a shipped model ({', '.join(shipped_model_names())}) or a checkpoint "
                            "(.pt), or pass --allow-untrained for experiments")
    if args.tile:
        margin = detector.margin()
        if args.tile <= 2 * margin:
            raise CRDetectError(f"--tile {args.tile} is too small for model {detector.name!r}: tiles must be larger "
                                f"than twice its context margin ({margin} px), i.e. at least {2 * margin + 1}; "
                                "or --tile 0 for whole frames")


def cmd_detect(args: argparse.Namespace) -> int:
    import signal

    from ..pipeline import DetectOptions, detector_for, run_batch

    inputs = expand_inputs(args.files) + ([SAMPLE_FILE] if args.sample else [])
    if not inputs:
        raise CRDetectError("no input files; pass FITS files, directories or globs (or --sample)")
    if args.hdu is not None and args.hdu.strip().startswith("-"):
        raise CRDetectError(f"--hdu {args.hdu}: HDU numbers count from 0 (the primary HDU); name the HDU by its "
                            "number or EXTNAME (`crdetect detect FILE` searches every science image)")
    if not any(path.exists() for path in inputs):  # a mistyped path: nothing (out-dir, summary) is created
        raise CRDetectError(f"no such file: {', '.join(repr(str(p)) for p in inputs[:5])}"
                            f"{f' and {len(inputs) - 5} more' if len(inputs) > 5 else ''}; check the path")
    # the parser's destinations are DetectOptions' fields (tests/test_cli.py checks that every field has one)
    options = DetectOptions(**{f.name: getattr(args, f.name) for f in fields(DetectOptions)})
    if args.bad_pixel_mask:  # a missing or unreadable mask file fails once, before any work
        from ..io.reading import open_fits

        open_fits(args.bad_pixel_mask).close()
    # a bad model name, checkpoint or tile fails once, up front; the serial path reuses this detector
    check_detector_options(args, detector_for(options))
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        rows, summary = run_batch(inputs, options, jobs=args.jobs, scheduler=args.scheduler, progress=not args.quiet)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return report_batch(rows, summary, len(inputs), args.quiet)


def report_batch(rows: list[dict], summary: Path, files: int, quiet: bool) -> int:
    """Print what became of every file (errors and files not written on stderr, always) and return the exit
    status: 0 when this run wrote (or, with --skip-existing, kept) every output it was asked for, else 1."""
    from ..pipeline import wrote_everything
    from ..pipeline.stages import KEPT, OK

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
    from ..device import torch_available
    from ..pretrained import pretrained_models

    shipped = pretrained_models()
    if torch_available():  # the registry's architectures are torch modules
        from ..models import count_parameters, create_model, list_models, model_description

        names = list_models(args.pattern)
        if not names:
            raise CRDetectError(f"no model matches {args.pattern!r}")
        width = max(len(n) for n in names)
        print(f"{'name':<{width}}  {'params':>9}  {'weights':<8}  description")
        for name in names:
            weights = "shipped" if name in shipped else "-"
            print(f"{name:<{width}}  {count_parameters(create_model(name)):>9,}  {weights:<8}  {model_description(name)}")
    else:
        print("(the registry's untrained architectures need torch: pip install 'crdetect[torch]')")
    if shipped:
        print("\nshipped trained models (use with --model NAME; 'default' is used when --model is not given):")
        # default and fast first (the table's order): they are the ones trained for real frames
        for name, entry in shipped.items():
            # the data's description; a bare path of the machine that trained it means nothing here
            trained_on = entry.trained_on or "see the model card"
            scores = "; test " + ", ".join(f"{k} {v:.4f}" for k, v in entry.test.items()) if entry.test else ""
            runs = ", ".join(entry.networks) or "none (torch only)"
            print(f"  {name:<12} {entry.architecture} {entry.kwargs}  {entry.parameters:,} params, threshold "
                  f"{entry.threshold:.3f}; trained on {trained_on}{scores}; networks without torch: {runs}; "
                  f"model card: {entry.path.with_suffix('.md')}")
    else:
        print("\nNo trained model is shipped: `crdetect detect` needs --model CHECKPOINT.pt.")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from ..viewer import write_quicklook, write_viewer

    if args.png:
        png = write_quicklook(args.output, args.out, args.extver, args.image, overwrite=args.overwrite)
        print(f"wrote {png}")
        return 0
    page = write_viewer(args.output, args.out, args.extver, args.image, overwrite=args.overwrite)
    print(f"wrote {page}: open it in a browser (self-contained, no server needed)")
    return 0


def add_parsers(subcommand) -> None:
    """The ``detect``, ``view`` and ``models`` subcommands (``subcommand(name, **kwargs)`` adds one)."""
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
    detect.add_argument("--no-file-mask", dest="file_masks", action="store_false",
                        help="ignore the file's own bad-pixel/DQ plane (by default its non-zero pixels are never "
                             "flagged and are kept out of the background and noise estimates)")
    detect.add_argument("--threshold", type=probability, default=None,
                        help="probability threshold, 0 to 1 (default: the model's)")
    detect.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    detect.add_argument("--grow", type=number_type(int, 0, what="a whole number of pixels >= 0"), default=0,
                        metavar="PX", help="grow the CR mask by PX pixels (8-connected; default 0)")
    detect.add_argument("--tile", type=tile_size, default=1024, help="tile size in pixels; 0 for whole frames")
    detect.add_argument("--overwrite", action="store_true", help="replace existing output files")
    detect.add_argument("--skip-existing", action="store_true", help="skip files whose output exists (restarts)")
    detect.add_argument("--full-frame", action="store_true",
                        help="run on every pixel; by default only the header's DATASEC (else TRIMSEC) of raw frames, "
                             "so overscan is never flagged")
    detect.add_argument("--saturation", type=positive_float, default=None,
                        help="saturation level (image units); default: header SATURATE/SATLEVEL, else flat "
                             "plateaus at the top of the frame's range. Saturated stars and bleed trails are "
                             "never flagged")
    detect.add_argument("--mask-only", action="store_true",
                        help="write only crdetect's extensions (CRMASK, CRPROB, CRVETO, CLEANED), not a copy of the input's "
                             "HDUs (a quarter of the size for float32 CCDs)")
    detect.add_argument("--inpaint", nargs="?", const=DEFAULT_METHOD, default=None, choices=METHODS, metavar="METHOD",
                        help="also write a CLEANED extension, the flagged pixels filled by METHOD: maskfill (the "
                             "default: van Dokkum & Pasha's iterative fill, the best measured in results/inpainting/) "
                             "or median (of the unflagged 5x5 neighbours); CRINPNT records it")
    detect.add_argument("--gain", type=positive_float, default=None,
                        help="e-/ADU; with --read-noise, scale by the detector's noise instead of the pixels' "
                             "(bias-subtracted frames)")
    detect.add_argument("--read-noise", type=non_negative_float, default=None, help="e- (with --gain)")
    detect.add_argument("--noise-from-header", action="store_true",
                        help="take gain and read noise from each HDU's header (GAIN, RDNOISE, ...)")
    detect.add_argument("--sky", type=finite_float, default=None, help="sky level in ADU (default: robust estimate)")
    detect.add_argument("--compile", action="store_true",
                        help="torch.compile the network (10-30 s per process; on 2 CPU cores no faster than the "
                             "eager network since BatchNorms are folded: measure with benchmarks/bench_detect.py)")
    detect.add_argument("--precision", default="auto", choices=["auto", "float32", "int8", "bfloat16", "float16"],
                        help="network arithmetic: auto (default: on a CPU int8 for the shipped default and fast, "
                             "quantised with calibration, TPR on the real frames within 0.003 of float32 but for one "
                             "rate where it is higher, results/int8.md; float32 otherwise; float16 on CUDA GPUs), "
                             "float32, int8 (OpenVINO, shipped default and fast), bfloat16 (torch; CPUs with "
                             "AVX512-BF16 or AMX), float16 (CUDA GPUs); the output header records it (CRPRECIS)")
    detect.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"],
                        help="the network's runtime: auto (default: OpenVINO on a CPU for the shipped models, no "
                             "torch needed; torch on GPUs and for checkpoints of your own, crdetect[torch]), "
                             "openvino, torch; the output header records it (CRBACKND)")
    detect.add_argument("--no-source-veto", dest="source_veto", action="store_false",
                        help="keep every region the network flags; by default regions that look like stars (smooth, "
                             "with a PSF's wings: trailed, elongated or undersampled stars) are taken out "
                             "(crdetect.veto; the CRVETO extension holds them, CRNVETO counts them)")
    detect.add_argument("--jobs", type=positive_int, default=1, help="worker processes on this machine (default 1)")
    detect.add_argument("--threads", type=positive_int, default=None,
                        help="network threads per process (default: every core, or 1 per worker with --jobs or "
                             "--scheduler); set it to the cores a batch job was given")
    detect.add_argument("--encoders", type=non_negative_int, default=None,
                        help="threads that compress the outputs while the next file is searched (default: none "
                             "on a CPU, where the network uses every core; up to 8 beside a GPU); 0: the writer "
                             "thread compresses")
    detect.add_argument("--scheduler", default=None,
                        help="Dask scheduler address, or 'local' for a local Dask cluster (needs crdetect[survey])")
    detect.set_defaults(func=cmd_detect)

    view = subcommand("view", help="an HTML page to inspect a detection (threshold slider, zoom, hits, "
                                       "mask download)")
    view.add_argument("output", help="a file written by crdetect detect")
    view.add_argument("--out", default=None, help="the page (default: OUTPUT with .html, or .png with --png)")
    view.add_argument("--png", action="store_true",
                      help="a static PNG instead, for pipelines and logs: the frame with the mask in red and stamps "
                           "of the largest hits (needs crdetect[plots])")
    view.add_argument("--extver", type=int, default=None, help="which science image (EXTVER of its CRMASK)")
    view.add_argument("--image", default=None, help="the input file, for outputs written with --mask-only")
    view.add_argument("--overwrite", action="store_true", help="replace an existing page")
    view.set_defaults(func=cmd_view)

    models = subcommand("models", help="list the registered models with their parameter counts")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'tunet_*'")
    models.set_defaults(func=cmd_models)
