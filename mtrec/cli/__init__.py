"""The `mtrec` command line: one module per command group; each parses and delegates."""
