"""Helpers shared by the tests: synthetic data, a tiny SavedModel, training, Chromium."""
