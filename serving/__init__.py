"""mtrec serving: request building for TF Serving's APIs (server and client to follow)."""
