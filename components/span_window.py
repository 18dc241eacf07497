"""SpanWindowStrategy: the spans a continuous-training run trains on, from MLMD.

A run ingests one span, t, and evaluates on it; the model trains on the ``window`` spans
before it, t-window .. t-1, as the data component already wrote them in earlier runs (no
span is read again). A span whose examples did not pass ExampleValidator is left out, so a
bad day stops its own run and never reaches a later model. Per span, the newest version.
"""

from __future__ import annotations

import ml_metadata as mlmd
from tfx import types
from tfx.dsl.components.common import resolver
from tfx.types import artifact_utils

from mtrec import names as F
from mtrec.components.anomalies_gate import describe_anomalies
from mtrec.components.example_gen import SPLIT_COUNTS

CURRENT_KEY = "current"  # The examples this run ingested: they fix t.
EXAMPLES_KEY = "examples"  # Every Examples artifact: the data component's are kept.
ANOMALIES_KEY = "anomalies"  # Every ExampleAnomalies artifact ExampleValidator wrote.


def window_spans(current: int, window: int) -> range:
    """The spans trained on when span ``current`` is ingested: the ``window`` before it."""
    return range(max(current - window, 0), current)


def is_ingested(examples: types.Artifact) -> bool:
    """Whether the data component wrote these examples (Transform's output is Examples too,
    without the counts the data component records)."""
    return SPLIT_COUNTS in examples.mlmd_artifact.custom_properties


def newest_per_span(artifacts: list[types.Artifact]) -> dict[int, types.Artifact]:
    """Span -> its newest artifact (highest version, then the latest written)."""
    newest: dict[int, types.Artifact] = {}
    for artifact in sorted(artifacts, key=lambda a: (a.span, a.version, a.id)):
        newest[artifact.span] = artifact
    return newest


def validated(examples: types.Artifact, anomalies: list[types.Artifact]) -> bool:
    """Whether ExampleValidator checked these examples (an anomalies artifact of their span
    written after them) and found nothing."""
    checks = [
        a
        for a in anomalies
        if a.span == examples.span
        and a.id > examples.id
        # ExampleValidator's; not the serving-skew anomalies of RequestSkewGen.
        and F.TRAIN in artifact_utils.decode_split_names(a.split_names)
    ]
    return bool(checks) and not describe_anomalies(max(checks, key=lambda a: a.id))


class SpanWindowStrategy(resolver.ResolverStrategy):
    """Resolves ``examples`` to the validated spans t-window .. t-1, t being the span of
    ``current``; ``current`` passes through."""

    def __init__(self, window: int) -> None:
        self._window = int(window)

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> dict[str, list[types.Artifact]] | None:
        del store  # Everything needed is in the channels.
        current = input_dict.get(CURRENT_KEY, [])
        result: dict[str, list[types.Artifact]] = {key: [] for key in input_dict}
        result[CURRENT_KEY] = list(current)
        if not current:
            return result
        wanted = window_spans(max(a.span for a in current), self._window)
        anomalies = input_dict.get(ANOMALIES_KEY, [])
        found = newest_per_span([a for a in input_dict.get(EXAMPLES_KEY, []) if a.span in wanted])
        result[EXAMPLES_KEY] = [
            found[span] for span in sorted(found) if validated(found[span], anomalies)
        ]
        return result
