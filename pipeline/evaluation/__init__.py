"""Evaluation: tuned models against their base on held-out prompts and seeds, scored by every metric.

Owns `<run>/eval/`. Modules:
- `models`: the models compared (base, trainer outputs, diffusers directories) and their tags;
- `compare`: `evaluate`, generation through stage 1 and item-by-item pairing of base and tuned images;
- `winrates`: the statistics (per-metric, average and majority win rates, bootstrap intervals), pure numpy;
- `tables`: the tables and plot people read.

The command line is `pipeline/evaluate.py`.
"""

from pipeline.evaluation.compare import EvalOutputs, evaluate
from pipeline.evaluation.models import EvalError, TunedModel, parse_tuned
from pipeline.evaluation.winrates import WinRate, win_rates

__all__ = ["EvalError", "EvalOutputs", "TunedModel", "WinRate", "evaluate", "parse_tuned", "win_rates"]
