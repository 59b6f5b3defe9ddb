"""Workflows that chain the stages: the whole job (with online rounds), the ablation, and the paper's experiment.

- `job`: `run_job(cfg)`, stage 1 → vote → train → evaluate for `run.rounds` rounds;
- `ablation`: `run_ablation(cfg, variants)`, stage 1 once, then a vote and a training per variant, one evaluation;
- `experiment`: `run_experiment(cfg)`, the paper's table: the methods of `methods` trained on one set of
  candidates, evaluated against the base and head to head, resumable part by part (`parts`).

Their command lines are `pipeline/job.py`, `pipeline/ablation.py` and `pipeline/experiment.py`.
"""
