"""Results of pipeline runs from MLMD: run summaries, `mtrec inspect` and the HTML report."""
