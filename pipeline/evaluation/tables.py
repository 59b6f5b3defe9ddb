"""The win-rate tables as people read them: Markdown, Parquet (with the protocol) and a plot, balance included.

The long table (`pipeline.evaluation.compare.rates_frame`) has one row per run × baseline × prompt group ×
statistic. Readers get it wide: one row per run, one column per statistic, cells `0.62 [0.55, 0.69]`, metrics
that did not vote marked `(held out)`, and the balance columns (`worst_metric`, `won_all`, `lost_all`) beside
`average` and `majority` in every table and plot.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.evaluation.protocol import summary_line, to_parquet_metadata
from pipeline.evaluation.winrates import SUMMARY_STATISTICS
from pipeline.io import atomic_path, write_text_atomic

HELD_OUT_MARK = " (held out)"
STATISTIC_NOTES = (
    "`average`: mean of the per-metric win rates; `worst_metric`: the lowest of them; `majority`: more metrics "
    "prefer the model's image than the baseline's (½ if as many); `won_all` / `lost_all`: share of items won / "
    "lost on every metric at once."
)


def cell(row: Mapping[str, Any]) -> str:
    return f"{row['win_rate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def statistic_order(frame: pl.DataFrame) -> list[str]:
    """Voting metrics, then held-out metrics, then the summary statistics, as columns are read."""
    seen = (
        frame.select("metric", "held_out").unique(maintain_order=True)
        if "held_out" in frame.columns
        else None
    )
    metrics = list(dict.fromkeys(frame["metric"].to_list()))
    held = set(seen.filter(pl.col("held_out"))["metric"].to_list()) if seen is not None else set()
    plain = [m for m in metrics if m not in SUMMARY_STATISTICS and m not in held]
    return plain + [m for m in metrics if m in held] + [m for m in SUMMARY_STATISTICS if m in metrics]


def label(metric: str, held_out: set[str]) -> str:
    return metric + HELD_OUT_MARK if metric in held_out else metric


def held_out_metrics(frame: pl.DataFrame) -> set[str]:
    if "held_out" not in frame.columns:
        return set()
    return set(frame.filter(pl.col("held_out"))["metric"].to_list())


def side_by_side(frame: pl.DataFrame) -> pl.DataFrame:
    """Wide table: one row per (baseline, prompt group, run) present, one column per statistic."""
    order = statistic_order(frame)
    held = held_out_metrics(frame)
    index = [c for c in ("baseline", "prompt_set", "run") if c in frame.columns]
    cells = frame.with_columns(
        cell=pl.Series([cell(r) for r in frame.iter_rows(named=True)], dtype=pl.String),
        metric=pl.col("metric").map_elements(lambda m: label(m, held), return_dtype=pl.String),
    )
    wide = cells.pivot(on="metric", index=index, values="cell", maintain_order=True)
    return wide.select([*index, *[label(m, held) for m in order]])


def _markdown_table(wide: pl.DataFrame) -> list[str]:
    lines = ["| " + " | ".join(wide.columns) + " |", "|" + "---|" * len(wide.columns)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in wide.iter_rows()]


def markdown(
    frame: pl.DataFrame,
    title: str = "Win rate over the base",
    notes: str = "",
    protocol: Mapping[str, Any] | None = None,
) -> str:
    """The win rates as Markdown: the protocol, what the numbers are, then a table per prompt group."""
    n = frame["n"].to_list()
    lines = [f"# {title}", ""]
    if protocol is not None:
        lines += [f"Protocol: {summary_line(protocol)}.", ""]
    lines.append(
        "Fraction of held-out (prompt, seed) items where the model's image beats the baseline's image from the "
        f"same noise (ties count ½), with bootstrap confidence intervals; n = {min(n)}"
        + (f"–{max(n)}" if max(n) != min(n) else "")
        + " items per row. "
        + STATISTIC_NOTES
    )
    if notes:
        lines += ["", notes]
    groups = ["prompt_set"] if "prompt_set" in frame.columns else []
    for key, part in frame.group_by(groups, maintain_order=True) if groups else [((None,), frame)]:
        if key[0] is not None:
            lines += ["", f"## {key[0]}"]
        wide = side_by_side(part).drop([c for c in ("prompt_set",) if c in part.columns])
        if "baseline" in wide.columns and wide["baseline"].n_unique() == 1:
            wide = wide.drop("baseline")
        lines += ["", *_markdown_table(wide)]
    return "\n".join(lines) + "\n"


def write_markdown(path: str | Path, frame: pl.DataFrame, **kwargs: Any) -> Path:
    return write_text_atomic(path, markdown(frame, **kwargs))


def write_parquet(path: str | Path, frame: pl.DataFrame, protocol: Mapping[str, Any] | None = None) -> Path:
    """Parquet with the protocol in the file's key-value metadata (`protocol.read_parquet_protocol`)."""
    table = frame.to_arrow()
    if protocol is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), **to_parquet_metadata(protocol)}
        )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def plot(path: str | Path, frame: pl.DataFrame, title: str = "Win rate over the base") -> Path:
    """Grouped bars per statistic (metrics, then the summary and balance statistics), one bar per run, CI
    whiskers, a 0.5 line; one panel per (baseline, prompt group); held-out metrics hatched and marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = statistic_order(frame)
    held = held_out_metrics(frame)
    panels = [c for c in ("baseline", "prompt_set") if c in frame.columns]
    parts = list(frame.group_by(panels, maintain_order=True)) if panels else [((), frame)]
    runs = list(dict.fromkeys(frame["run"].to_list()))
    width = 0.8 / len(runs)
    fig_width = max(6.0, 0.75 * len(order) * max(1, len(runs)) ** 0.5 + 2.5)
    fig, axes = plt.subplots(len(parts), 1, figsize=(fig_width, 3.2 * len(parts) + 0.6), squeeze=False)
    x = np.arange(len(order))
    for ax, (key, part) in zip(axes[:, 0], parts, strict=True):
        for j, run in enumerate(runs):
            sub = {r["metric"]: r for r in part.filter(pl.col("run") == run).iter_rows(named=True)}
            rate = np.array([sub[m]["win_rate"] if m in sub else np.nan for m in order])
            low = np.array([sub[m]["ci_low"] if m in sub else np.nan for m in order])
            high = np.array([sub[m]["ci_high"] if m in sub else np.nan for m in order])
            bars = ax.bar(
                x + (j - (len(runs) - 1) / 2) * width,
                rate,
                width,
                yerr=np.vstack([rate - low, high - rate]),
                capsize=2,
                label=run,
                color=f"C{j}",
            )
            for bar, metric in zip(bars, order, strict=True):
                if metric in held:
                    bar.set_hatch("//")
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
        n_metrics = len([m for m in order if m not in SUMMARY_STATISTICS])
        ax.axvline(n_metrics - 0.5, color="grey", linewidth=0.6)
        ax.set_xticks(x, [label(m, held) for m in order], rotation=25, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("win rate")
        names = dict(zip(panels, key, strict=True))
        heading = [f"vs {names['baseline']}"] if "baseline" in names else []
        heading += [str(names["prompt_set"])] if "prompt_set" in names else []
        ax.set_title(" · ".join(heading) or title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path, title)


def save_figure(fig: Any, path: str | Path, title: str) -> Path:
    """Title the figure, write it as a PNG atomically (a reader never sees half a file) and free it."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
