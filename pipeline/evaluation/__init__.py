"""Evaluation: any model against any model (the base, Diffusion-DPO, BalancedDPO, ablations) on held-out prompts
and seeds, on several prompt sets, scored by every metric (held-out ones too), with balance and honest intervals.

Owns `<run>/eval/`. Modules:
- `models`: the compared models (base, trainer outputs, diffusers directories, hub pipelines, UNet-only
  checkpoints) and their tags;
- `prompt_sets`: the evaluation's prompt sets, their subsets and the pooled group;
- `cache`: the image cache shared by comparisons: planned, reused and new images, reading scores back;
- `protocol`: the settings that move win rates, stamped on every table and checked before comparing or reusing;
- `compare`: `evaluate`, generation through stage 1 and item-by-item pairing of the two sides;
- `winrates`: the statistics (per metric, average, worst metric, majority, won/lost on every metric, bootstrap
  intervals by prompt), pure numpy;
- `tables`: the tables and plot people read.

The command line is `pipeline/evaluate.py`.
"""

from pipeline.evaluation.compare import EvalOutputs, evaluate
from pipeline.evaluation.models import EvalError, TunedModel, base_model, parse_tuned
from pipeline.evaluation.protocol import ProtocolMismatch
from pipeline.evaluation.winrates import WinRate, win_rates

__all__ = [
    "EvalError",
    "EvalOutputs",
    "ProtocolMismatch",
    "TunedModel",
    "WinRate",
    "base_model",
    "evaluate",
    "parse_tuned",
    "win_rates",
]
