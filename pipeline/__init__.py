"""mtrec: pipeline."""
