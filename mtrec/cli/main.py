"""The ``mtrec`` command: assembles each command group's parser and maps errors to one line."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf_keras).

from mtrec.cli import data, kubeflow, offline, results, run, serve, skew
from mtrec.cli.common import configure_logging
from mtrec.errors import MtrecError

# One module per command group, in the order `mtrec --help` lists them.
GROUPS = (data, run, results, skew, serve, offline, kubeflow)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; ``mtrec --help`` lists the subcommands."""
    parser = argparse.ArgumentParser(
        prog="mtrec", description="Multi-task recommender (rating, click, purchase) on TFX."
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show TFX/Beam logs and error tracebacks"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.add_parsers(commands)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """What the CLI reports as one line: mtrec's own errors, and TensorFlow's errors about
    the inputs it was given (a bad dtype or shape, a missing file, a model that cannot run)."""
    if "tensorflow" not in sys.modules:  # Nothing of TensorFlow's can have been raised.
        return (MtrecError,)
    import tensorflow as tf

    return (
        MtrecError,
        tf.errors.InvalidArgumentError,
        tf.errors.NotFoundError,
        tf.errors.FailedPreconditionError,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: one clear line and exit code 2 for a user-fixable error."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return args.func(args)
    except user_errors() as err:
        if args.verbose:
            traceback.print_exc()
        print(f"mtrec: error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The error's message on one line; TensorFlow's carry a node trace after the first."""
    text = getattr(err, "message", None) or str(err)
    if not isinstance(err, MtrecError):
        text = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())
