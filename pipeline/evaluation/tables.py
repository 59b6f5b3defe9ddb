"""The win-rate tables as people read them: side by side, Markdown, Parquet and a grouped bar plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline.io import atomic_path, write_text_atomic


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
