"""mtrec: a multi-task recommender (rating, click, purchase) as a TFX pipeline.

Rooms, in the order data flows (each imports only from rooms before it): the core modules
here (names, errors, examples, files), data, models, serving, results, components, pipeline,
cli.
"""

__version__ = "0.1.0"
