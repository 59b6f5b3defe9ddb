"""Generators of small, real inputs for tests, benchmarks and the example notebook.

- `candidates`: candidates tables made up from score matrices (the vote's tests and benchmark);
- `toy_run`: a tiny-model run directory with candidates and rule-labelled pairs (the trainer's tests and benchmark);
- `pickapic`: a small pair table in the Pick-a-Pic v2 layout with the real dataset's traits (sizes, ties, repeats);
- `pickapic_synthetic`: a Pick-a-Pic-layout table with human labels from a hidden rule (the tiny experiment; the
  stages read it as the embedded data set `tiny/pickapic/<split>.parquet`, `pipeline.data.embedded`);
- `rehearsal`: a shipped full-size config run on the CPU with only what cannot run here replaced
  (`python -m pipeline.testing.rehearsal configs/sd15.yaml`);
- `synthetic_run`: a whole run directory of any size without a model (the report's tests and benchmark).
"""
