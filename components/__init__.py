"""mtrec: components."""
