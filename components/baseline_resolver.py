"""BaselineModelStrategy: the latest blessed model created before the candidate.

TFX's LatestBlessedModelStrategy returns the newest blessed model, which on a cached re-run
is the candidate itself: the Evaluator would re-run to compare a model with itself, and the
Pusher would push it again. Resolving "the blessed model this candidate would replace"
keeps those inputs identical across re-runs, so both are served from cache.
"""

import ml_metadata as mlmd
from tfx import types
from tfx.dsl.components.common import resolver

CANDIDATE_KEY = "candidate"
MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"


class BaselineModelStrategy(resolver.ResolverStrategy):
    """Resolves ``model``/``model_blessing`` to the newest blessed model older than every
    artifact in ``candidate`` (all of them when no candidate is wired)."""

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> dict[str, list[types.Artifact]] | None:
        del store  # Everything needed is in the channels.
        candidates = input_dict.get(CANDIDATE_KEY, [])
        newest_allowed = min((a.id for a in candidates), default=None)
        blessings = {
            b.get_int_custom_property("current_model_id"): b
            for b in input_dict.get(BLESSING_KEY, [])
            if b.get_int_custom_property("blessed") == 1
        }
        result = {key: [] for key in input_dict}
        result[CANDIDATE_KEY] = list(candidates)
        for model in sorted(input_dict.get(MODEL_KEY, []), key=lambda a: a.id, reverse=True):
            if newest_allowed is not None and model.id >= newest_allowed:
                continue
            if model.id in blessings:
                result[MODEL_KEY] = [model]
                result[BLESSING_KEY] = [blessings[model.id]]
                break
        return result
