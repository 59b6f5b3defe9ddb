"""Win rates of a tuned model over its base, with bootstrap confidence intervals, and their reports.

Evaluation generates every held-out (prompt, seed) item twice, with the base and with a tuned model started from
the same noise, and scores both with every metric. An item's *win* for one metric is 1 if the tuned image scores
higher, 0 if lower, ½ on a tie. From these:

- per-metric win rate: the mean win over items;
- average win rate: the mean of the per-metric win rates;
- majority-vote win rate: per item, the tuned image wins if more metrics prefer it than prefer the base (½ if as
  many), the same rule the vote uses to label training pairs.

A majority win can hide a per-metric loss, so every report shows all three. Confidence intervals are percentile
bootstraps over items, with one set of resampled indices shared by every statistic of a run, seeded so a report
is reproducible. The math is pure numpy; the tables and plot are `pipeline.evaluation.tables`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

AVERAGE = "average"
MAJORITY = "majority"


@dataclass(frozen=True)
class WinRate:
    """One statistic of one run: `metric` is a metric name, `average` or `majority`."""

    run: str
    metric: str
    win_rate: float
    ci_low: float
    ci_high: float
    n: int


def wins(tuned: np.ndarray, base: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
    """Per-item win of tuned over base: 1, 0, or ½ when the scores differ by at most `epsilon`."""
    tuned, base = np.asarray(tuned, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if tuned.shape != base.shape:
        raise ValueError(f"tuned scores have shape {tuned.shape}, base scores {base.shape}")
    diff = tuned - base
    return np.where(np.abs(diff) <= epsilon, 0.5, (diff > 0).astype(np.float64))


def majority_wins(per_metric: np.ndarray) -> np.ndarray:
    """Per-item majority outcome from a (metrics, items) array of wins: 1, 0, or ½ when the vote is split."""
    per_metric = np.asarray(per_metric, dtype=np.float64)
    for_tuned = (per_metric == 1.0).sum(axis=0)
    for_base = (per_metric == 0.0).sum(axis=0)
    return np.where(for_tuned > for_base, 1.0, np.where(for_tuned < for_base, 0.0, 0.5))


def bootstrap_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n) item indices drawn with replacement; the same seed gives the same resamples."""
    if n < 1:
        raise ValueError("cannot bootstrap an empty set of items")
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def percentile_ci(values: np.ndarray, indices: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` over the resamples in `indices`."""
    means = np.asarray(values, dtype=np.float64)[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def win_rates(
    run: str,
    tuned: Mapping[str, np.ndarray],
    base: Mapping[str, np.ndarray],
    epsilon: Mapping[str, float] | None = None,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[WinRate]:
    """Per-metric, average and majority win rates of `tuned` over `base`, scores aligned item by item."""
    metrics = list(base)
    if set(tuned) != set(metrics):
        raise ValueError(
            f"run {run!r}: tuned metrics {sorted(tuned)} differ from base metrics {sorted(metrics)}"
        )
    if not metrics:
        raise ValueError(f"run {run!r}: no metrics to compare")
    epsilon = epsilon or {}
    per_metric = np.stack([wins(tuned[m], base[m], epsilon.get(m, 0.0)) for m in metrics])
    n = per_metric.shape[1]
    indices = bootstrap_indices(n, samples, seed)
    rows = [(m, per_metric[i]) for i, m in enumerate(metrics)]
    rows += [(AVERAGE, per_metric.mean(axis=0)), (MAJORITY, majority_wins(per_metric))]
    out = []
    for name, values in rows:
        low, high = percentile_ci(values, indices, confidence)
        out.append(WinRate(run, name, float(values.mean()), low, high, n))
    return out


def to_frame(rates: Sequence[WinRate]) -> pl.DataFrame:
    """Long table: one row per (run, metric)."""
    schema = {
        "run": pl.String,
        "metric": pl.String,
        "win_rate": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "n": pl.Int64,
    }
    return pl.DataFrame([asdict(r) for r in rates], schema=schema)
