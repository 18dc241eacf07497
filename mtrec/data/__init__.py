"""Raw logs to labelled, split examples: MovieLens-100K, u1-style ratings, your own logs."""
