"""ServingValidator: TFX's InfraValidator role without Docker or Kubernetes.

It starts the embedded TF-Serving-compatible server on the candidate model (which replays
the model's warmup requests while loading), sends a sample of eval examples over gRPC, and
checks that the served answers match in-process predictions of the same SavedModel. It
writes an InfraBlessing, which the Pusher requires. A model the Evaluator did not bless is
not served at all (NOT blessed, with the reason recorded).
"""

# No `from __future__ import annotations`: TFX reads this module's annotations at runtime.

import logging
import os
import tempfile

from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.utils import io_utils

from mtrec import names as F
from mtrec.errors import PipelineError

log = logging.getLogger(__name__)

MODEL_NAME = "candidate"
BLESSED_FILE = "INFRA_BLESSED"
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"


class ServingMismatchError(PipelineError):
    """The served model answered differently from the same model in process."""


def read_examples(examples_uri: str, split: str, limit: int) -> list:
    """Up to ``limit`` serialized tf.Examples of one split."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no '{split}' split under {examples_uri}")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
    return [record.numpy() for record in dataset]


def validate_serving(
    model_dir: str, examples: list, batch_size: int = 16, rtol: float = 1e-4, atol: float = 1e-5
) -> dict:
    """Serve ``model_dir`` on loopback, compare gRPC Predict with in-process calls.

    Returns what was checked; raises on any difference or failure to load.
    """
    import numpy as np
    import tensorflow as tf

    from mtrec.serving import config
    from mtrec.serving.client import ServingClient
    from mtrec.serving.server import ModelServer, ServerOptions

    with tempfile.TemporaryDirectory(prefix="mtrec-serving-validator-") as base:
        os.symlink(os.path.abspath(model_dir), os.path.join(base, "1"))
        server = ModelServer(
            ServerOptions(
                models=tuple(config.single_model(MODEL_NAME, base)),
                port=0,
                rest_api_port=None,
                poll_seconds=0,
            )
        ).start()
        try:
            statuses = server.manager.statuses(MODEL_NAME)
            if not server.manager.available(MODEL_NAME):
                errors = "; ".join(s.error for s in statuses if s.error) or "not loaded"
                raise ServingMismatchError(f"the server could not load the model: {errors}")
            local = tf.saved_model.load(model_dir).signatures[F.SERVING_DEFAULT]
            checked = 0
            with ServingClient(f"127.0.0.1:{server.grpc_port}", MODEL_NAME) as client:
                signatures = client.metadata()["signatures"]
                for start in range(0, len(examples), batch_size):
                    batch = np.array(examples[start : start + batch_size], dtype=object)
                    served = client.predict_tensors({"examples": batch})
                    expected = local(examples=tf.constant(batch))
                    for head, value in expected.items():
                        if not np.allclose(served[head], value.numpy(), rtol=rtol, atol=atol):
                            raise ServingMismatchError(
                                f"served '{head}' differs from in-process predictions: "
                                f"{served[head][:4]} vs {value.numpy()[:4]}"
                            )
                    checked += len(batch)
        finally:
            server.stop(grace=1)
    return {"examples_checked": checked, "signatures": sorted(signatures)}


@tfx.dsl.components.component
def ServingValidator(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model_blessing: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.InfraBlessing],
    split: tfx.dsl.components.Parameter[str] = "eval",
    num_examples: tfx.dsl.components.Parameter[int] = 64,
) -> None:
    """Bless the candidate for serving only if the served answers match in-process ones."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    fileio.makedirs(blessing.uri)
    if not model_blessing.get_int_custom_property("blessed"):
        _mark(blessing, False, "the Evaluator did not bless the model; not served")
        return
    model_dir = os.path.join(model.uri, "Format-Serving")
    try:
        sample = read_examples(examples.uri, split, num_examples)
        report = validate_serving(model_dir, sample)
    except (ServingMismatchError, FileNotFoundError) as err:
        _mark(blessing, False, str(err))
        return
    _mark(
        blessing,
        True,
        f"served {report['examples_checked']} '{split}' examples over "
        f"gRPC; answers match in-process predictions",
    )


def _mark(blessing: tfx.types.standard_artifacts.InfraBlessing, blessed: bool, reason: str) -> None:
    """Record the verdict the way InfraValidator does (the Pusher reads ``blessed``)."""
    name = BLESSED_FILE if blessed else NOT_BLESSED_FILE
    io_utils.write_string_file(os.path.join(blessing.uri, name), reason + "\n")
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("reason", reason)
    (log.info if blessed else log.warning)(
        "ServingValidator: %s: %s", "INFRA_BLESSED" if blessed else "NOT blessed", reason
    )
