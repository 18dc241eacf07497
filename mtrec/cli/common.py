"""What several command modules share: options checked as user errors, logging."""

from __future__ import annotations

import builtins
import logging
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mtrec import quiet
from mtrec.errors import MtrecError

if TYPE_CHECKING:  # Heavy modules are imported lazily so that --help stays instant.
    import argparse

    from mtrec.components.thresholds import EvaluationSettings

T = TypeVar("T")

DEFAULT_OUTPUT = "mtrec_output"
log = logging.getLogger("mtrec")


def checked(factory: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Build a config; its validation errors are the user's options, so report them plainly."""
    try:
        return factory(*args, **kwargs)
    except ValueError as err:
        raise MtrecError(str(err)) from None


# Warnings hidden without -v (PYTHONWARNINGS syntax, so Beam workers inherit them): library
# deprecations, and TFMA's 0/0 recall on a slice without positives (it reports NaN).
QUIET_WARNINGS = (
    "ignore::FutureWarning:",
    "ignore::DeprecationWarning:",
    "ignore::RuntimeWarning:tensorflow_model_analysis.metrics.confusion_matrix_metrics",
)


def configure_logging(verbose: bool) -> None:
    """Quiet by default: our own progress and errors, not TF/Beam/absl chatter."""
    # Environment first: TensorFlow and the Beam worker processes read it when they start.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbose else "3")
    if not verbose:
        os.environ.setdefault("PYTHONWARNINGS", ",".join(QUIET_WARNINGS))
        for rule in QUIET_WARNINGS:
            action, _, category, module = rule.split(":")
            warnings.filterwarnings(action, category=getattr(builtins, category), module=module)
        quiet.install()  # TF's harmless teardown errors, here and in the Beam workers.
    level = logging.INFO if verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for ours in ("mtrec",):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("absl", "apache_beam", "tensorflow"):
        logging.getLogger(noisy).setLevel(level)
    if not verbose:  # The CLI reports a failed component itself, in one line.
        logging.getLogger("absl").addFilter(_NOT_EXECUTION_FAILED)  # Once, however often.
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.ERROR)
    except ImportError:
        pass


class _NotExecutionFailed(logging.Filter):
    """Drops TFX's "Execution N failed." log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Execution %d failed."


_NOT_EXECUTION_FAILED = _NotExecutionFailed()


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """The schema and blessing options that `mtrec run` and `compile-kubeflow` share."""
    import dataclasses

    from mtrec.components.thresholds import THRESHOLD_HELP, EvalThresholds

    group = parser.add_argument_group("schema and evaluation (what blesses a model)")
    group.add_argument(
        "--schema",
        metavar="FILE",
        help="schema.pbtxt to import instead of the curated one shipped in the package "
        "(on Kubeflow: a path the cluster can read)",
    )
    group.add_argument(
        "--infer-schema",
        action="store_true",
        help="infer the schema with SchemaGen instead of the curated one",
    )
    for field in dataclasses.fields(EvalThresholds):
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            type=int if field.name == "min_slice_size" else float,
            help=THRESHOLD_HELP[field.name],
        )


def schema_choice(args: argparse.Namespace, curated: bool) -> str:
    """--schema FILE, --infer-schema, else the curated schema when the data is
    MovieLens-shaped (``curated``) or SchemaGen's inference for other logs."""
    from mtrec.pipeline.config import CURATED, INFERRED

    if args.schema and args.infer_schema:
        raise MtrecError("--schema and --infer-schema exclude each other")
    return args.schema or (CURATED if curated and not args.infer_schema else INFERRED)


def evaluation_settings(args: argparse.Namespace) -> EvaluationSettings:
    """The threshold options given (checked now); the rest follow the data where the
    Evaluator runs: RMSE bounds from the training-mean baseline, the slices big enough."""
    import dataclasses

    from mtrec.components.thresholds import EvalThresholds, EvaluationSettings

    given = tuple(
        sorted(
            (f.name, getattr(args, f.name))
            for f in dataclasses.fields(EvalThresholds)
            if getattr(args, f.name) is not None
        )
    )
    return checked(EvaluationSettings, overrides=given)
