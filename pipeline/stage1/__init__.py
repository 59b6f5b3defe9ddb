"""Stage 1: prompts × seeds → images and their final latents → every metric's score → `<run>/candidates/`.

Owns the candidates table and its errors table. Modules, in the order a batch meets them:
- `plan`: work items (prompt, model, seed → deterministic image id), model references, relabel-mode import;
- `ray_plan`: the Ray Data pipeline (actor pools for generation and scoring) and the local/attached cluster;
- `batches`: `GenerateBatch` and `ScoreBatch`, plain callables on one batch (no Ray, testable on a dict);
- `store`: `CandidateStore`, which writes every row exactly once from the driver;
- `run`: `run_stage1` / `generate_and_score`, the Python API; `errors`: what stage 1 raises.

The command line is `pipeline/score.py` (what `ray job submit` runs).
"""

from pipeline.stage1.errors import ScoringError, Stage1Error
from pipeline.stage1.run import Stage1Outputs, generate_and_score, run_stage1

__all__ = ["ScoringError", "Stage1Error", "Stage1Outputs", "generate_and_score", "run_stage1"]
