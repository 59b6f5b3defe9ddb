"""Preference metrics behind one interface: `build_scorer(spec)(images, prompts) -> float32 scores`."""

from scorers.base import Scorer, ScorerError, available, build_scorer, register

__all__ = ["Scorer", "ScorerError", "available", "build_scorer", "register"]
