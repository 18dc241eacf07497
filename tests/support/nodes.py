"""The pipeline's node ids, as MLMD records them, for the tests that run it whole."""

NODES = frozenset(
    {
        "MtrecExampleGen",
        "CuratedSchemaGen",
        "StatisticsGen",
        "ExampleValidator",
        "AnomaliesGate",
        "Transform",
        "Trainer",
        "baseline_model_resolver",
        "Evaluator",
        "ServingValidator",
        "Pusher",
    }
)
