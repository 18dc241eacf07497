"""TF-Serving-compatible serving: gRPC and REST server, model manager, client, offline scoring."""
