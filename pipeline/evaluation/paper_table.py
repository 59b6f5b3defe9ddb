"""The paper-style table of an experiment, from several evaluations that share one protocol.

Rows are methods; columns are prompt group × statistic (each metric, `average`, `worst_metric`, `majority`,
`won_all`, `lost_all`), one block per baseline (the base, and the head-to-head opponent). It is assembled from the
evaluations' own `winrates.parquet` files, whose protocols (stamped in the Parquet metadata) must agree: numbers
measured under other sampler, guidance, resolution, seeds, prompts or metrics are never put side by side.

Outputs: Markdown (a headline table per baseline, then every statistic with its interval per prompt group),
Parquet (the long table of all evaluations, with the protocol) and a PNG heatmap (methods × columns, per baseline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.evaluation import tables
from pipeline.evaluation.protocol import check_same, read_parquet_protocol, summary_line
from pipeline.evaluation.winrates import AVERAGE, LOST_ALL, MAJORITY, WON_ALL, WORST_METRIC
from pipeline.io import write_text_atomic

HEADLINE = (AVERAGE, WORST_METRIC, MAJORITY)


def combine_evaluations(tables_: Sequence[str | Path]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The long win-rate tables of several evaluations, one after the other, and their common protocol.

    Refused (`ProtocolMismatch`, naming every difference) when two evaluations ran under different protocols.
    """
    if not tables_:
        raise ValueError("no evaluations to combine")
    first = read_parquet_protocol(tables_[0])
    for other in tables_[1:]:
        check_same(first, read_parquet_protocol(other), f"{tables_[0]} and {other} (first vs second)")
    return pl.concat([pl.read_parquet(t) for t in tables_]), first


def headline(frame: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Rows methods, columns `<group> <statistic>` for the headline statistics, values only."""
    part = frame.filter((pl.col("baseline") == baseline) & pl.col("metric").is_in(HEADLINE))
    part = part.with_columns(column=pl.col("prompt_set") + " " + pl.col("metric"))
    wide = part.pivot(on="column", index="run", values="win_rate", maintain_order=True)
    return wide.with_columns(pl.exclude("run").round(3))


def markdown(frame: pl.DataFrame, protocol: Mapping[str, Any], title: str, notes: str = "") -> str:
    lines = [f"# {title}", "", f"Protocol: {summary_line(protocol)}.", ""]
    if notes:
        lines += [notes, ""]
    lines.append(tables.STATISTIC_NOTES)
    for baseline in frame["baseline"].unique(maintain_order=True).to_list():
        lines += ["", f"## Win rate over {baseline}: {', '.join(HEADLINE)} per prompt group", ""]
        wide = headline(frame, baseline)
        lines += ["| " + " | ".join(wide.columns) + " |", "|" + "---|" * len(wide.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in wide.iter_rows()]
    for baseline in frame["baseline"].unique(maintain_order=True).to_list():
        part = frame.filter(pl.col("baseline") == baseline)
        for group in part["prompt_set"].unique(maintain_order=True).to_list():
            wide = tables.side_by_side(part.filter(pl.col("prompt_set") == group)).drop(
                "baseline", "prompt_set"
            )
            lines += ["", f"### Over {baseline}, {group} (n = {_items(part, group)} items)", ""]
            lines += ["| " + " | ".join(wide.columns) + " |", "|" + "---|" * len(wide.columns)]
            lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in wide.iter_rows()]
    return "\n".join(lines) + "\n"


def _items(frame: pl.DataFrame, group: str) -> str:
    n = frame.filter(pl.col("prompt_set") == group)["n"].to_list()
    return f"{min(n)}" if min(n) == max(n) else f"{min(n)}–{max(n)}"


def heatmap(path: str | Path, frame: pl.DataFrame, title: str) -> Path:
    """Methods × (prompt group, statistic) coloured by win rate (0.5 white; `won_all` green, `lost_all` orange),
    one panel per baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baselines = frame["baseline"].unique(maintain_order=True).to_list()
    order = tables.statistic_order(frame)
    held = tables.held_out_metrics(frame)
    groups = frame["prompt_set"].unique(maintain_order=True).to_list()
    columns = [(g, m) for g in groups for m in order]
    runs = frame["run"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(
        len(baselines), 1, figsize=(max(8.0, 0.42 * len(columns) + 3), 0.42 * len(runs) * len(baselines) + 2.6),
        squeeze=False,
    )  # fmt: skip
    for ax, baseline in zip(axes[:, 0], baselines, strict=True):
        part = frame.filter(pl.col("baseline") == baseline)
        cells = {(r["run"], r["prompt_set"], r["metric"]): r["win_rate"] for r in part.iter_rows(named=True)}
        rows = [r for r in runs if any((r, g, m) in cells for g, m in columns)]
        values = np.array([[cells.get((r, g, m), np.nan) for g, m in columns] for r in rows])
        colours = np.ones((*values.shape, 4))
        for j, (_, m) in enumerate(columns):
            # Win rates: red below ½, blue above. Shares of items won / lost on every metric: their own scales.
            cmap = {WON_ALL: plt.get_cmap("Greens"), LOST_ALL: plt.get_cmap("Oranges")}.get(m)
            col = values[:, j]
            colours[:, j] = (
                cmap(0.8 * np.nan_to_num(col)) if cmap else plt.get_cmap("RdBu")(np.nan_to_num(col, nan=0.5))
            )
        ax.imshow(colours, aspect="auto")
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if not np.isnan(values[i, j]):
                    r, g, b, _ = colours[i, j]
                    ink = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6, color=ink)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        labels = [f"{g}: {tables.label(m, held)}" for g, m in columns]
        ax.set_xticks(range(len(columns)), labels, rotation=60, ha="right", fontsize=6)
        for k in range(1, len(groups)):
            ax.axvline(k * len(order) - 0.5, color="black", linewidth=0.8)
        ax.set_title(f"win rate over {baseline}", fontsize=9)
    return tables.save_figure(fig, path, title)


def write_paper_table(
    frame: pl.DataFrame, protocol: Mapping[str, Any], markdown_path: Path, parquet_path: Path, png_path: Path,
    title: str, notes: str = "",
) -> tuple[Path, Path, Path]:  # fmt: skip
    """The three files of the table; returns their paths."""
    return (
        write_text_atomic(markdown_path, markdown(frame, protocol, title, notes)),
        tables.write_parquet(parquet_path, frame, protocol=protocol),
        heatmap(png_path, frame, title),
    )
