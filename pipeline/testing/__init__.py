"""Generators of small, real inputs for tests, benchmarks and the example notebook; not used by the stages.

- `candidates`: candidates tables made up from score matrices (the vote's tests and benchmark);
- `toy_run`: a tiny-model run directory with candidates and rule-labelled pairs (the trainer's tests and benchmark);
- `pickapic`: a small pair table in the Pick-a-Pic v2 layout with the real dataset's traits (sizes, ties, repeats);
- `rehearsal`: a shipped full-size config run on the CPU with only what cannot run here replaced
  (`python -m pipeline.testing.rehearsal configs/sd15.yaml`).
"""
