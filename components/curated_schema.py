"""CuratedSchemaGen: the schema shipped inside the mtrec package, as the run's Schema artifact.

ImportSchemaGen takes a file path fixed when the pipeline is compiled, which on Kubeflow
names a file on the compiling machine that the container does not have. This component
reads the schema from the installed package where it runs (laptop or container alike).
Its ``schema_digest`` property is the schema's hash at compile time, so a changed schema
misses the cache.
"""

import hashlib
import os
from pathlib import Path

from tfx import v1 as tfx
from tfx.dsl.io import fileio

from mtrec.data.config import CURATED_SCHEMA
from mtrec.errors import PipelineError

SCHEMA_FILE = "schema.pbtxt"  # The file name SchemaGen writes and TFX readers expect.


def curated_schema_digest() -> str:
    """Hash of the packaged schema, for the component's cache key."""
    return hashlib.sha256(Path(CURATED_SCHEMA).read_bytes()).hexdigest()[:16]


@tfx.dsl.components.component
def CuratedSchemaGen(
    schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    schema_digest: tfx.dsl.components.Parameter[str],
) -> None:
    """Copy the packaged schema into the Schema artifact, checking it is the compiled one."""
    text = Path(CURATED_SCHEMA).read_bytes()
    found = hashlib.sha256(text).hexdigest()[:16]
    if found != schema_digest:
        raise PipelineError(
            f"the installed mtrec's schema ({found}) is not the one the pipeline was "
            f"compiled with ({schema_digest}): rebuild the image or recompile"
        )
    with fileio.open(os.path.join(schema.uri, SCHEMA_FILE), "wb") as handle:
        handle.write(text)
