"""mtrec: models."""
