"""mtrec: serving."""
