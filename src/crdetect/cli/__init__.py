"""Command-line interface: ``crdetect detect``, ``crdetect models`` and the study's other commands.

:mod:`.detect` holds detection (``detect``, ``view``, ``models``), :mod:`.study` the study's commands
(``simulate``, ``train``, ``study``, ``evaluate``, ``label``), :mod:`.arguments` the argument types they share.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from ..errors import CRDetectError
from . import detect, study
from .arguments import Terminated
from .detect import SAMPLE_FILE

__all__ = ["SAMPLE_FILE", "build_parser", "main"]

logger = logging.getLogger(__name__)


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

    detect.add_parsers(subcommand)
    study.add_parsers(subcommand)
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
