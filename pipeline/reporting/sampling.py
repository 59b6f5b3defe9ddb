"""What the page shows of a large run: bounded, seeded samples, as pure functions.

The report computes every statistic on all rows, but shows only a bounded number of prompts, candidates, pairs,
evaluation items and curve points, so a run of a million candidates still makes a page of a few megabytes. Every
choice here is a pure function of its inputs and a seed: the same run gives the same page.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReportLimits:
    """The most the page shows of each part (statistics always use every row)."""

    prompts: int = 8  # prompts whose candidates are shown, per round
    candidates_per_prompt: int = 16
    pairs: int = 24  # pairs shown, winner beside loser, per round
    eval_items: int = 48  # held-out (prompt, seed) items shown with every model's image
    curve_points: int = 1000  # points per training curve
    thumb_px: int = 256  # images larger than this (longest side) are shown as JPEG thumbnails
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("prompts", "candidates_per_prompt", "pairs", "eval_items", "curve_points", "thumb_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReportLimits.{name} must be at least 1, got {getattr(self, name)}")
        if self.curve_points < 2:
            raise ValueError(f"ReportLimits.curve_points must be at least 2, got {self.curve_points}")


def sample_indices(n: int, k: int, seed: int) -> np.ndarray:
    """At most `k` distinct indices of `range(n)`, sorted; all of them when n ≤ k."""
    if n < 0 or k < 0:
        raise ValueError(f"need n, k ≥ 0, got n={n}, k={k}")
    if n <= k:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False).astype(np.int64))


def sample_keys(keys: Sequence[str], k: int, seed: int) -> list[str]:
    """At most `k` of the distinct `keys`, chosen independently of their order (sorted first), in sorted order."""
    distinct = sorted(set(keys))
    return [distinct[i] for i in sample_indices(len(distinct), k, seed)]


def candidates_to_show(scores: np.ndarray, limit: int) -> np.ndarray:
    """Rows of one prompt's (candidates, metrics) score matrix to show: every metric's best and worst first.

    Returns at most `limit` sorted row indices; the best and worst row of each metric are always among them
    (when `limit` allows: 2 per metric), the rest are filled in row order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    marked: list[int] = []
    for column in scores.T:
        for row in (int(np.argmax(column)), int(np.argmin(column))):
            if row not in marked:
                marked.append(row)
    chosen = marked[:limit]
    rest = (i for i in range(n) if i not in chosen)
    while len(chosen) < limit:
        chosen.append(next(rest))
    return np.sort(np.array(chosen, dtype=np.int64))


def ranks_descending(scores: np.ndarray) -> np.ndarray:
    """Per column, the rank of each row (1 = highest score; ties share the better rank)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return np.zeros(scores.shape, dtype=np.int64)
    # rank = 1 + number of strictly higher scores in the column
    return 1 + (scores[None, :, :] > scores[:, None, :]).sum(axis=1)


def downsample_curve(
    steps: Sequence[float], values: Sequence[float], max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points of a curve: means of consecutive buckets of equal size, first and last kept.

    A bucket mean keeps the trend of a noisy training curve, where every k-th point would keep its noise.
    """
    x, y = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"steps and values differ in length: {x.shape} vs {y.shape}")
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if len(x) <= max_points:
        return x, y
    inner = max_points - 2
    edges = np.linspace(1, len(x) - 1, inner + 1).round().astype(np.int64)
    xs = [x[0]] + [x[a:b].mean() for a, b in itertools.pairwise(edges)] + [x[-1]]
    ys = [y[0]] + [y[a:b].mean() for a, b in itertools.pairwise(edges)] + [y[-1]]
    return np.array(xs), np.array(ys)


def shown_note(shown: int, total: int, what: str) -> str:
    """The sentence the page prints under a sampled part: 'all 24 prompts' or '8 of 125,000 prompts (a sample)'."""
    if shown >= total:
        return f"all {total:,} {what}"
    return f"{shown:,} of {total:,} {what} (a seeded sample)"
