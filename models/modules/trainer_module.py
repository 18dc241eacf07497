"""Trainer entry point: ``run_fn`` referenced by path from the pipeline."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf_keras).

from mtrec.models.training import run_fn

__all__ = ["run_fn"]
