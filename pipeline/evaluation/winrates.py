"""Win rates of one model over another (a tuned model over its base, or head to head), with bootstrap intervals.

Evaluation generates every held-out (prompt, seed) item with both models from the same noise and scores both
images with every metric. An item's *win* for one metric is 1 if the model's image scores higher than the
baseline's, 0 if lower, ½ on a tie. From these:

- per-metric win rate: the mean win over items;
- `average`: the mean of the per-metric win rates;
- `majority`: per item, the model wins if more metrics prefer its image than prefer the baseline's (½ if as many),
  the rule the vote labels training pairs with;
- `worst_metric`: the lowest per-metric win rate, the metric the model serves worst;
- `won_all` / `lost_all`: the share of items won (lost) on every metric at once; a tie is neither.

The last three are the headline of a *balanced* method: a model that games some metrics shows a high average and
a low worst metric, while a balanced gain moves items into `won_all`. Swapping the two sides turns every per-item
win w into 1 − w, so A over B and B over A add up to 1 statistic by statistic (`won_all` and `lost_all` swap).

Intervals are percentile bootstraps. Items of one prompt share the prompt (only the seed differs), so they are
not independent draws: by default whole prompts are resampled with all their seeds (`clusters` = the items'
prompt ids), which gives the wider, honest interval when outcomes cluster by prompt. One set of resamples is
shared by every statistic of a comparison, seeded so a report is reproducible. Pure numpy; the tables and plot
are `pipeline.evaluation.tables`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

AVERAGE = "average"
MAJORITY = "majority"
WORST_METRIC = "worst_metric"
WON_ALL = "won_all"
LOST_ALL = "lost_all"
SUMMARY_STATISTICS = (AVERAGE, WORST_METRIC, MAJORITY, WON_ALL, LOST_ALL)


@dataclass(frozen=True)
class WinRate:
    """One statistic of one comparison: `metric` is a metric name or one of `SUMMARY_STATISTICS`.

    `n` items from `n_clusters` independent units of the bootstrap (prompts, or items when resampled alone).
    """

    run: str
    metric: str
    win_rate: float
    ci_low: float
    ci_high: float
    n: int
    n_clusters: int = 0


def wins(tuned: np.ndarray, base: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
    """Per-item win of one side over the other: 1, 0, or ½ when the scores differ by at most `epsilon`."""
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


def won_on_every_metric(per_metric: np.ndarray) -> np.ndarray:
    """1.0 for items every metric prefers the model on (ties do not count as wins), else 0.0."""
    return (np.asarray(per_metric) == 1.0).all(axis=0).astype(np.float64)


def lost_on_every_metric(per_metric: np.ndarray) -> np.ndarray:
    """1.0 for items every metric prefers the baseline on, else 0.0."""
    return (np.asarray(per_metric) == 0.0).all(axis=0).astype(np.float64)


@dataclass(frozen=True)
class Resamples:
    """Bootstrap resamples of items drawn cluster by cluster: `counts[s, c]` is how often resample s drew cluster c.

    A resampled mean weighs every item by its cluster's count, so a prompt drawn twice brings all its seeds twice.
    """

    counts: np.ndarray  # (samples, clusters)
    cluster_of_item: np.ndarray  # (items,) index into clusters
    sizes: np.ndarray  # (clusters,) items per cluster

    @property
    def n_clusters(self) -> int:
        return int(self.sizes.shape[0])

    def means(self, values: np.ndarray) -> np.ndarray:
        """Resampled means of per-item `values` (items,) or (rows, items) → (samples,) or (rows, samples)."""
        values = np.asarray(values, dtype=np.float64)
        rows = np.atleast_2d(values)
        sums = np.stack([np.bincount(self.cluster_of_item, r, self.n_clusters) for r in rows])
        out = (sums @ self.counts.T) / (self.sizes @ self.counts.T)
        return out[0] if values.ndim == 1 else out


def draw_resamples(clusters: Sequence[object] | np.ndarray, samples: int, seed: int) -> Resamples:
    """Resample whole clusters with replacement, as many per resample as there are clusters; seeded.

    `clusters` labels each item (e.g. its prompt id); items with the same label are kept together. Giving every
    item its own label is the ordinary item bootstrap.
    """
    labels = np.asarray(clusters)
    if labels.ndim != 1 or labels.shape[0] < 1:
        raise ValueError("cannot bootstrap an empty set of items")
    _, cluster_of_item, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    n_clusters = sizes.shape[0]
    drawn = np.random.default_rng(seed).integers(0, n_clusters, size=(samples, n_clusters))
    flat = (drawn + n_clusters * np.arange(samples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=samples * n_clusters).reshape(samples, n_clusters)
    return Resamples(counts.astype(np.float64), cluster_of_item.ravel(), sizes.astype(np.float64))


def percentile_interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` share of resampled statistics."""
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(np.asarray(means, dtype=np.float64), [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n) item indices drawn with replacement; the same seed gives the same resamples."""
    if n < 1:
        raise ValueError("cannot bootstrap an empty set of items")
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def percentile_ci(values: np.ndarray, indices: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` over the item resamples in `indices`."""
    return percentile_interval(np.asarray(values, dtype=np.float64)[indices].mean(axis=1), confidence)


def win_rates(
    run: str,
    tuned: Mapping[str, np.ndarray],
    base: Mapping[str, np.ndarray],
    epsilon: Mapping[str, float] | None = None,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters: Sequence[object] | np.ndarray | None = None,
) -> list[WinRate]:
    """Every statistic of the module docstring for `tuned` over `base`, scores aligned item by item.

    `clusters` labels the items for the bootstrap (their prompt ids: whole prompts are resampled); None resamples
    items one by one.
    """
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
    labels = np.arange(n) if clusters is None else np.asarray(clusters)
    if labels.shape != (n,):
        raise ValueError(f"run {run!r}: {labels.shape[0]} cluster labels for {n} items")
    resamples = draw_resamples(labels, samples, seed)
    metric_means = resamples.means(per_metric)  # (metrics, samples)

    def rate(name: str, point: float, means: np.ndarray) -> WinRate:
        low, high = percentile_interval(means, confidence)
        return WinRate(run, name, point, low, high, n, resamples.n_clusters)

    out = [rate(m, float(per_metric[i].mean()), metric_means[i]) for i, m in enumerate(metrics)]
    per_item = {
        AVERAGE: per_metric.mean(axis=0),
        MAJORITY: majority_wins(per_metric),
        WON_ALL: won_on_every_metric(per_metric),
        LOST_ALL: lost_on_every_metric(per_metric),
    }
    for name in SUMMARY_STATISTICS:
        if name == WORST_METRIC:
            out.append(rate(name, float(per_metric.mean(axis=1).min()), metric_means.min(axis=0)))
        else:
            out.append(rate(name, float(per_item[name].mean()), resamples.means(per_item[name])))
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
        "n_clusters": pl.Int64,
    }
    return pl.DataFrame([asdict(r) for r in rates], schema=schema)
