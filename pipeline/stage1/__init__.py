"""Stage 1: prompts × seeds → images and their final latents → every metric's score → `<run>/candidates/`.

Owns the candidates table and its errors table. Modules, in the order a batch meets them:
- `plan`: work items (prompt, model, seed → deterministic image id), model references, relabel-mode import, and
  `check_references` (unknown scorers, missing model paths: found before Ray starts);
- `identity`: the settings that define an image besides its id (size, steps, guidance, scheduler, dtype, the model
  behind each tag). `image_settings(cfg, model_refs, relabel)` states them, `check_image_settings(dir, recorded,
  current)` refuses a call that would mix or reuse images of other settings; recorded in the candidates manifest
  (`image_settings`) and checked on every call, the evaluation's own candidates included;
- `ray_plan`: the Ray Data pipeline (actor pools for generation and scoring) and the local/attached cluster;
- `batches`: `GenerateBatch` and `ScoreBatch`, plain callables on one batch (no Ray, testable on a dict);
- `store`: `CandidateStore`, which writes every row exactly once from the driver;
- `run`: `run_stage1` / `generate_and_score`, the Python API; `errors`: what stage 1 raises.

The command line is `pipeline/score.py` (what `ray job submit` runs).
"""

from pipeline.stage1.errors import ScoringError, Stage1Error
from pipeline.stage1.identity import SettingsMismatchError, check_image_settings, image_settings
from pipeline.stage1.plan import InputError
from pipeline.stage1.run import Stage1Outputs, generate_and_score, run_stage1

__all__ = [
    "InputError",
    "ScoringError",
    "SettingsMismatchError",
    "Stage1Error",
    "Stage1Outputs",
    "check_image_settings",
    "generate_and_score",
    "image_settings",
    "run_stage1",
]
