"""Workflows that chain the stages: the whole job (with online rounds) and the ablation of training variants.

- `job`: `run_job(cfg)`, stage 1 → vote → train → evaluate for `run.rounds` rounds;
- `ablation`: `run_ablation(cfg, variants)`, stage 1 once, then a vote and a training per variant, one evaluation.

Their command lines are `pipeline/job.py` and `pipeline/ablation.py`.
"""
