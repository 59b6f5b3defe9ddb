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
is reproducible. The math is pure numpy; the writers (Markdown, Parquet, PNG) sit at the bottom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.io import atomic_path, write_text_atomic

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


def side_by_side(frame: pl.DataFrame) -> pl.DataFrame:
    """Wide table for reading: one row per run, one column per metric, cells `0.62 [0.55, 0.69]`."""
    metric_order = list(dict.fromkeys(frame["metric"].to_list()))
    cell = [
        f"{r['win_rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" for r in frame.iter_rows(named=True)
    ]
    cells = frame.with_columns(cell=pl.Series(cell, dtype=pl.String))
    wide = cells.pivot(on="metric", index="run", values="cell", maintain_order=True)
    return wide.select(["run", *metric_order])


def markdown(frame: pl.DataFrame, title: str = "Win rate of tuned over base", notes: str = "") -> str:
    """The side-by-side table as Markdown, with a line saying what the numbers are."""
    wide = side_by_side(frame)
    n = frame["n"].to_list()
    lines = [f"# {title}", ""]
    lines.append(
        f"Fraction of held-out (prompt, seed) items where the tuned image beats the base image from the same "
        f"noise (ties count ½), with bootstrap confidence intervals; n = {min(n)}"
        + (f"–{max(n)}" if max(n) != min(n) else "")
        + " items per run. `majority`: more metrics prefer the tuned image than the base one."
    )
    if notes:
        lines += ["", notes]
    lines += ["", "| " + " | ".join(wide.columns) + " |", "|" + "---|" * len(wide.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in wide.iter_rows()]
    return "\n".join(lines) + "\n"


def write_markdown(path: str | Path, frame: pl.DataFrame, **kwargs: str) -> Path:
    return write_text_atomic(path, markdown(frame, **kwargs))


def write_parquet(path: str | Path, frame: pl.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return Path(path)


def plot(path: str | Path, frame: pl.DataFrame, title: str = "Win rate of tuned over base") -> Path:
    """Grouped bars: one group per metric (then average, majority), one bar per run, CI whiskers, 0.5 line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(frame["metric"].to_list()))
    runs = list(dict.fromkeys(frame["run"].to_list()))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(metrics) * max(1, len(runs)) ** 0.5 + 2), 3.8))
    x = np.arange(len(metrics))
    for j, run in enumerate(runs):
        sub = {r["metric"]: r for r in frame.filter(pl.col("run") == run).iter_rows(named=True)}
        rate = np.array([sub[m]["win_rate"] if m in sub else np.nan for m in metrics])
        low = np.array([sub[m]["ci_low"] if m in sub else np.nan for m in metrics])
        high = np.array([sub[m]["ci_high"] if m in sub else np.nan for m in metrics])
        ax.bar(
            x + (j - (len(runs) - 1) / 2) * width,
            rate,
            width,
            yerr=np.vstack([rate - low, high - rate]),
            capsize=2,
            label=run,
        )
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, metrics, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate vs base")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
