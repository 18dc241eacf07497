"""mtrec: models modules."""
