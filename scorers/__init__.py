"""Preference metrics behind one interface: `build_scorer(spec)(images, prompts) -> float32 scores`.

Importing the package registers every built-in metric: hpsv2, hpsv21, clip, pickscore, aesthetic, imagereward.
"""

# Registration happens on import; the order is irrelevant.
from scorers import aesthetic, clip_score, hps, imagereward, pickscore
from scorers.base import Scorer, ScorerError, available, build_scorer, register

__all__ = ["Scorer", "ScorerError", "available", "build_scorer", "register"]
del aesthetic, clip_score, hps, imagereward, pickscore
