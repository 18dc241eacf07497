"""What several command modules share: options checked as user errors, logging."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from mtrec.errors import MtrecError

T = TypeVar("T")

DEFAULT_OUTPUT = "mtrec_output"
log = logging.getLogger("mtrec")


def checked(factory: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Build a config; its validation errors are the user's options, so report them plainly."""
    try:
        return factory(*args, **kwargs)
    except ValueError as err:
        raise MtrecError(str(err)) from None


def configure_logging(verbose: bool) -> None:
    """Quiet by default: our own progress and errors, not TF/Beam/absl chatter."""
    # Environment first: TensorFlow and the Beam worker processes read it when they start.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbose else "3")
    if not verbose:
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        sys.unraisablehook = _ignore_tf_function_teardown
    level = logging.INFO if verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for ours in ("mtrec",):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("absl", "apache_beam", "tensorflow"):
        logging.getLogger(noisy).setLevel(level)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.ERROR)
    except ImportError:
        pass


def _ignore_tf_function_teardown(unraisable: sys.UnraisableHookArgs) -> None:
    """TF 2.16 reports harmless TypeErrors from AtomicFunction.__del__ at teardown."""
    if "AtomicFunction.__del__" not in repr(unraisable.object):
        sys.__unraisablehook__(unraisable)
